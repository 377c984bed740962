package run

import (
	"strings"
	"testing"
	"time"
)

const testUUID = "6ee58c77-c0fe-4567-82bd-6b08ed314883"

func TestParseFlagsAll(t *testing.T) {
	f, err := ParseFlags([]string{
		"--debug", "--net=none", "--interactive", "--private-users=65536:65536", "--mds-token=abc",
		"--local-config=/etc/rkt", "--hostname=web", "--dns-conf-mode=resolv=host,hosts=stage0",
		"--disable-capabilities-restriction", "--disable-paths", "--disable-seccomp", "--mutable",
		"--ipc=auto", testUUID,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Debug || f.Net != "none" || !f.Interactive || f.PrivateUsers != "65536:65536" || f.MDSToken != "abc" ||
		f.LocalConfig != "/etc/rkt" || f.Hostname != "web" || f.DNSConfMode != "resolv=host,hosts=stage0" ||
		!f.DisableCapabilitiesRestriction || !f.DisablePaths || !f.DisableSeccomp || !f.Mutable || f.IPC != "auto" || f.UUID != testUUID {
		t.Errorf("flags parsed wrong: %+v", f)
	}
}

func TestParseFlagsDefaultHostname(t *testing.T) {
	f, err := ParseFlags([]string{"--net=none", testUUID})
	if err != nil {
		t.Fatal(err)
	}
	if f.Hostname != "rkt-"+testUUID {
		t.Errorf("hostname = %q, want rkt-<uuid>", f.Hostname)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	cases := map[string][]string{
		"unknown flag":  {"--no-such-flag", testUUID},
		"missing uuid":  {"--net=none"},
		"two uuids":     {testUUID, testUUID},
		"invalid uuid":  {"not-a-uuid"},
		"flag after id": {testUUID, "--debug"},
	}
	for name, args := range cases {
		if _, err := ParseFlags(args); err == nil {
			t.Errorf("%s: ParseFlags(%q) succeeded, want an error", name, args)
		}
	}
}

func TestCheckSupportedNet(t *testing.T) {
	for _, net := range []string{"default", "none", "host", "default-restricted", "a:IP=10.1.1.5,b"} {
		f, _ := ParseFlags([]string{"--net=" + net, testUUID})
		if err := f.CheckSupported(); err != nil {
			t.Errorf("CheckSupported(--net=%s) = %v", net, err)
		}
	}
	f, _ := ParseFlags([]string{"--net=a:IP=10.1.1.x", testUUID})
	if err := f.CheckSupported(); err == nil || !strings.Contains(err.Error(), "10.1.1.x") {
		t.Errorf("CheckSupported(--net=a:IP=10.1.1.x) = %v, want an error naming the value", err)
	}
}

func TestReadVMSettings(t *testing.T) {
	env := map[string]string{EnvAccel: "tcg", EnvBootTimeout: "7", EnvStopTimeout: "3", EnvExtraKernelParams: " a=1  b "}
	s, err := ReadVMSettings(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if s.Accel != "tcg" || s.BootTimeout != 7*time.Second || s.StopTimeout != 3*time.Second || strings.Join(s.ExtraParams, "|") != "a=1|b" {
		t.Errorf("settings = %+v", s)
	}

	s, err = ReadVMSettings(func(string) string { return "" })
	if err != nil || s.Accel != "auto" || s.BootTimeout != DefaultBootTimeout || s.StopTimeout != DefaultStopTimeout {
		t.Errorf("defaults = %+v, %v", s, err)
	}
}

func TestReadVMSettingsRejects(t *testing.T) {
	for _, env := range []map[string]string{
		{EnvAccel: "xen"},
		{EnvBootTimeout: "0"},
		{EnvBootTimeout: "ten"},
		{EnvBootTimeout: "-5"},
		{EnvStopTimeout: "0"},
		{EnvStopTimeout: "1.5"},
		{EnvStopTimeout: "3601"},
		{EnvExtraKernelParams: "quiet init=/bin/sh"},
		{EnvExtraKernelParams: "panic=0"},
	} {
		_, err := ReadVMSettings(func(k string) string { return env[k] })
		if err == nil {
			t.Errorf("ReadVMSettings(%v) succeeded, want an error", env)
		}
	}
}

func TestCheckSupportedIPC(t *testing.T) {
	for ipc, want := range map[string]string{
		"":        "",
		"auto":    "",
		"private": "",
		"parent":  "cannot share the host's IPC namespace",
		"host":    "invalid --ipc=host",
	} {
		f := &Flags{Net: "none", IPC: ipc}
		err := f.CheckSupported()
		if want == "" && err != nil {
			t.Errorf("--ipc=%s: %v", ipc, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("--ipc=%s: error = %v, want it to contain %q", ipc, err, want)
		}
	}
}
