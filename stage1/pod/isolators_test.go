package pod

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

func TestApplyIsolators(t *testing.T) {
	cases := []struct {
		name, isolators string
		disableCaps     bool
		check           func(guestconfig.App) bool
	}{
		{"memory exact", `{"name":"resource/memory","value":{"limit":"42Mi"}}`, false,
			func(a guestconfig.App) bool { return a.MemoryMax == 44040192 }},
		{"cpu millis", `{"name":"resource/cpu","value":{"limit":"250m"}}`, false,
			func(a guestconfig.App) bool { return a.CPUMillis == 250 }},
		{"cpu shares to weight", `{"name":"os/linux/cpu-shares","value":2048}`, false,
			func(a guestconfig.App) bool { return a.CPUWeight == 200 }},
		{"oom score", `{"name":"os/linux/oom-score-adj","value":-500}`, false,
			func(a guestconfig.App) bool { return a.OOMScoreAdjust != nil && *a.OOMScoreAdjust == -500 }},
		{"no new privileges", `{"name":"os/linux/no-new-privileges","value":true}`, false,
			func(a guestconfig.App) bool { return a.NoNewPrivileges }},
		{"retain set", `{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_SYS_ADMIN","CAP_CHOWN"]}}`, false,
			func(a guestconfig.App) bool {
				return a.RestrictCapabilities && reflect.DeepEqual(a.Capabilities, []uint{0, 21})
			}},
		{"remove set", `{"name":"os/linux/capabilities-remove-set","value":{"set":["CAP_CHOWN","CAP_MKNOD","CAP_SYS_CHROOT","CAP_SETFCAP","CAP_AUDIT_WRITE","CAP_NET_RAW","CAP_SETPCAP"]}}`, false,
			func(a guestconfig.App) bool { return reflect.DeepEqual(a.Capabilities, []uint{1, 3, 4, 5, 6, 7, 10}) }},
		{"restriction disabled", `{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_CHOWN"]}}`, true,
			func(a guestconfig.App) bool { return !a.RestrictCapabilities && a.Capabilities == nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pm, err := ParseManifest([]byte(volumeManifest(`,"isolators":[`+c.isolators+`]`, "", "")))
			if err != nil {
				t.Fatal(err)
			}
			cfg, _, err := GuestConfig(makePodDir(t, "a"), pm, Options{UUID: testUUID, Hostname: "h", DisableCapabilities: c.disableCaps})
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg.Apps[0]) {
				t.Errorf("app = %+v", cfg.Apps[0])
			}
		})
	}
}

func TestApplyIsolatorsRejects(t *testing.T) {
	cases := map[string]string{
		`{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_CHOWN"]}},{"name":"os/linux/capabilities-remove-set","value":{"set":["CAP_KILL"]}}`: "cannot be used together",
		`{"name":"os/linux/capabilities-retain-set","value":{"set":["CAP_NOPE"]}}`:                                                                           `unknown capability "CAP_NOPE"`,
		`{"name":"example.com/custom","value":{}}`:                                                                                                           `isolator "example.com/custom" is unknown`,
		`{"name":"os/linux/seccomp-retain-set","value":{"set":["read","nosuchcall"]}}`:                                                                       `unknown system call "nosuchcall"`,
		`{"name":"os/linux/seccomp-remove-set","value":{"set":["@systemd/clock"]}}`:                                                                          `seccomp group "@systemd/clock" is not supported`,
		`{"name":"os/linux/seccomp-remove-set","value":{"set":["mount"],"errno":"EBOGUS"}}`:                                                                  `unknown errno "EBOGUS"`,
		`{"name":"os/unix/sysctl","value":{"net.ipv4.ip_forward":"1"}}`:                                                                                      "not supported yet",
	}
	for isolators, want := range cases {
		pm, err := ParseManifest([]byte(volumeManifest(`,"isolators":[`+isolators+`]`, "", "")))
		if err == nil {
			_, _, err = GuestConfig(makePodDir(t, "a"), pm, Options{UUID: testUUID, Hostname: "h"})
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("isolators %s: error = %v, want it to contain %q", isolators, err, want)
		}
	}
}
