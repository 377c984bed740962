package pod

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

const testUUID = "6ee58c77-c0fe-4567-82bd-6b08ed314883"

// makePodDir lays out an app rootfs with an executable /bin/sh for each app.
func makePodDir(t *testing.T, apps ...string) string {
	t.Helper()
	podDir := t.TempDir()
	for _, app := range apps {
		bin := filepath.Join(podDir, AppRootfs(app), "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, "busybox"), []byte("#!"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("busybox", filepath.Join(bin, "sh")); err != nil {
			t.Fatal(err)
		}
	}
	return podDir
}

func loadFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestGuestConfigSingleApp(t *testing.T) {
	pm, err := ParseManifest(loadFixture(t, "single-app.json"))
	if err != nil {
		t.Fatal(err)
	}
	podDir := makePodDir(t, "busybox-probe")
	cfg, _, err := GuestConfig(podDir, pm, Options{UUID: testUUID, Hostname: "rkt-" + testUUID})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps) != 1 {
		t.Fatalf("got %d apps, want 1", len(cfg.Apps))
	}
	app := cfg.Apps[0]
	wantExec := []string{"/bin/sh", "-c", `echo hello-from-app; echo args: "$0" "$@"; pwd; env; ls /`, "arg0", "arg1"}
	if !reflect.DeepEqual(app.Exec, wantExec) {
		t.Errorf("exec = %q, want %q", app.Exec, wantExec)
	}
	wantEnv := []string{"PATH=" + DefaultPath, "HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/sh", "FOO=bar", "AC_APP_NAME=busybox-probe"}
	if !reflect.DeepEqual(app.Env, wantEnv) {
		t.Errorf("env = %q, want %q", app.Env, wantEnv)
	}
	if app.View != "rw/busybox-probe" || app.WorkingDirectory != "/" || app.UID != 0 || app.GID != 0 {
		t.Errorf("app = %+v", app)
	}
}

func TestGuestConfigVolumesIsolatorsFixture(t *testing.T) {
	// rkt's manifest of two apps with volumes and isolators.
	data := strings.ReplaceAll(string(loadFixture(t, "two-apps-volumes-isolators.json")), "/srv/data/vol", t.TempDir())
	pm, err := ParseManifest([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range pm.Apps {
		names = append(names, a.Name.String())
	}
	cfg, _, err := GuestConfig(makePodDir(t, names...), pm, Options{UUID: testUUID, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := cfg.Apps[0], cfg.Apps[1]
	if a1.MemoryMax != 64000000 || a1.CPUMillis != 500 || a1.CPUWeight != 50 || a1.OOMScoreAdjust == nil || *a1.OOMScoreAdjust != 100 {
		t.Errorf("a1 resources = memory %d, cpu %d, weight %d, oom %v", a1.MemoryMax, a1.CPUMillis, a1.CPUWeight, a1.OOMScoreAdjust)
	}
	if !reflect.DeepEqual(a1.Capabilities, []uint{0, 12}) {
		t.Errorf("a1 capabilities = %v, want CAP_CHOWN and CAP_NET_ADMIN", a1.Capabilities)
	}
	if a1.Seccomp == nil || !a1.Seccomp.Allow || a1.Seccomp.Errno != 1 {
		t.Fatalf("a1 seccomp = %+v, want an allow list refusing with EPERM", a1.Seccomp)
	}
	// chmod and chown are 90 and 92 on x86-64; execve (59) is always allowed.
	for _, nr := range []uint32{90, 92, 59} {
		found := false
		for _, got := range a1.Seccomp.Syscalls {
			found = found || got == nr
		}
		if !found {
			t.Errorf("a1 seccomp lacks system call %d: %v", nr, a1.Seccomp.Syscalls)
		}
	}
	wantMounts := []guestconfig.Mount{{View: "rw/data", Target: "/data"}, {View: "rw/scratch", Target: "/scratch"}}
	if !reflect.DeepEqual(a1.Mounts, wantMounts) {
		t.Errorf("a1 mounts = %+v, want %+v", a1.Mounts, wantMounts)
	}
	if len(a2.Mounts) != 1 || a2.Mounts[0].View != "rw/scratch" {
		t.Errorf("a2 mounts = %+v, want the shared scratch volume", a2.Mounts)
	}
	if a2.Seccomp == nil || !a2.Seccomp.Allow || a2.Seccomp.Errno != 0 {
		t.Errorf("a2 seccomp = %+v, want the default allow list", a2.Seccomp)
	}
}

func TestGuestConfigTwoApps(t *testing.T) {
	manifest := `{"acKind":"PodManifest","acVersion":"1.30.0","apps":[
		{"name":"a","image":{"id":"sha512-` + strings.Repeat("0", 64) + `"},
		 "app":{"exec":["/bin/sh"],"user":"0","group":"0","supplementaryGIDs":[10,20],"workingDirectory":"/bin"},
		 "readOnlyRootFS":true},
		{"name":"b","image":{"id":"sha512-` + strings.Repeat("0", 64) + `"},"app":{"exec":["/bin/sh"],"user":"0","group":"0"}}]}`
	pm, err := ParseManifest([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	podDir := makePodDir(t, "a", "b")
	cfg, _, err := GuestConfig(podDir, pm, Options{UUID: testUUID, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps) != 2 || cfg.Apps[0].View != "ro/a" || cfg.Apps[1].View != "rw/b" {
		t.Fatalf("apps = %+v", cfg.Apps)
	}
	if got := cfg.Apps[0].SupplementaryGIDs; !reflect.DeepEqual(got, []uint32{10, 20}) {
		t.Errorf("supplementary GIDs = %v, want [10 20]", got)
	}
	if cfg.Apps[0].WorkingDirectory != "/bin" {
		t.Errorf("working directory = %q, want /bin", cfg.Apps[0].WorkingDirectory)
	}
	if !cfg.Apps[0].ReadOnlyRootfs || cfg.Apps[1].ReadOnlyRootfs {
		t.Errorf("read-only rootfs = %v, %v; want true, false", cfg.Apps[0].ReadOnlyRootfs, cfg.Apps[1].ReadOnlyRootfs)
	}
	for _, dir := range []string{"proc", "sys", "dev"} {
		if info, err := os.Stat(filepath.Join(podDir, AppRootfs("a"), dir)); err != nil || !info.IsDir() {
			t.Errorf("mount point /%s not created in the read-only rootfs: %v", dir, err)
		}
	}
}

func TestEnvManifestOverridesDefaults(t *testing.T) {
	pm, err := ParseManifest([]byte(`{"acKind":"PodManifest","acVersion":"1.30.0","apps":[{"name":"a",
		"image":{"id":"sha512-` + strings.Repeat("0", 64) + `"},
		"app":{"exec":["/bin/sh"],"user":"0","group":"0","environment":[
			{"name":"PATH","value":"/opt/bin"},{"name":"AC_APP_NAME","value":"spoofed"},{"name":"X","value":"a b\nc=d"}]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := GuestConfig(makePodDir(t, "a"), pm, Options{UUID: testUUID, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/opt/bin", "HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/sh", "X=a b\nc=d", "AC_APP_NAME=a"}
	if !reflect.DeepEqual(cfg.Apps[0].Env, want) {
		t.Errorf("env = %q, want %q", cfg.Apps[0].Env, want)
	}
}

func TestGuestConfigRejects(t *testing.T) {
	app := func(body string) string {
		return `{"acKind":"PodManifest","acVersion":"1.30.0","apps":[{"name":"a",
			"image":{"id":"sha512-` + strings.Repeat("0", 64) + `"},"app":` + body + `}]}`
	}
	cases := []struct {
		name, manifest, wantInError string
	}{
		{"missing executable", app(`{"exec":["/bin/nope"],"user":"0","group":"0"}`), `"/bin/nope" not found`},
		{"relative exec", app(`{"exec":["sh"],"user":"0","group":"0"}`), "not an absolute path"},
		{"empty exec", app(`{"exec":[],"user":"0","group":"0"}`), "exec is empty"},
		{"user name", app(`{"exec":["/bin/sh"],"user":"www","group":"0"}`), `user "www"`},
		{"directory as exec", app(`{"exec":["/bin"],"user":"0","group":"0"}`), "not a regular file"},
		{"symlink out of rootfs", app(`{"exec":["/bin/escape"],"user":"0","group":"0"}`), "not found"},
		{"reserved uid", app(`{"exec":["/bin/sh"],"user":"4294967295","group":"0"}`), "(uid_t)-1"},
		{"reserved gid", app(`{"exec":["/bin/sh"],"user":"0","group":"4294967295"}`), "(uid_t)-1"},
		{"NUL in argument", app(`{"exec":["/bin/sh","a\u0000b"],"user":"0","group":"0"}`), "exec[1] contains a NUL byte"},
		{"NUL in env", app(`{"exec":["/bin/sh"],"user":"0","group":"0","environment":[{"name":"X","value":"a\u0000"}]}`), "X contains a NUL byte"},
		{"argument too long", app(`{"exec":["/bin/sh","` + strings.Repeat("x", 131072) + `"],"user":"0","group":"0"}`), "exec[1] has 131072 bytes"},
		{"uid out of range", app(`{"exec":["/bin/sh"],"user":"4294967296","group":"0"}`), `user "4294967296": uid out of range`},
		{"negative gid", app(`{"exec":["/bin/sh"],"user":"0","group":"-1"}`), `group "-1": gid out of range`},
		{"event handler missing", app(`{"exec":["/bin/sh"],"user":"0","group":"0","eventHandlers":[{"name":"pre-start","exec":["/bin/true"]}]}`), `event handler pre-start: executable "/bin/true" not found`},
		{"event handler relative", app(`{"exec":["/bin/sh"],"user":"0","group":"0","eventHandlers":[{"name":"post-stop","exec":["sh"]}]}`), `event handler post-stop: exec[0] must be an absolute path`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			podDir := makePodDir(t, "a")
			outside := filepath.Join(podDir, "outside")
			if err := os.WriteFile(outside, []byte("x"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(podDir, AppRootfs("a"), "bin/escape")); err != nil {
				t.Fatal(err)
			}
			pm, err := ParseManifest([]byte(c.manifest))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = GuestConfig(podDir, pm, Options{UUID: testUUID, Hostname: "h"})
			if err == nil || !strings.Contains(err.Error(), c.wantInError) {
				t.Errorf("GuestConfig error = %v, want it to contain %q", err, c.wantInError)
			}
		})
	}
}

func TestParseManifestRejects(t *testing.T) {
	for _, data := range []string{
		`{`,
		`{"acKind":"ImageManifest","acVersion":"0.8.11","name":"x"}`,
		`{"acKind":"PodManifest","acVersion":"1.30.0","apps":[{"name":"Bad_Name","image":{"id":"sha512-00"}}]}`,
	} {
		if _, err := ParseManifest([]byte(data)); err == nil {
			t.Errorf("ParseManifest(%s) succeeded, want an error", data)
		}
	}
}

func TestValidateHostname(t *testing.T) {
	for _, h := range []string{"", "a b", "a/b", strings.Repeat("x", 65)} {
		if ValidateHostname(h) == nil {
			t.Errorf("ValidateHostname(%q) succeeded, want an error", h)
		}
	}
	if err := ValidateHostname("rkt-" + testUUID); err != nil {
		t.Error(err)
	}
}

func TestCheckDeviceCount(t *testing.T) {
	nics := MMIOLines - FixedDevices - 1
	if err := CheckDeviceCount(1, nics); err != nil {
		t.Errorf("CheckDeviceCount(volumes, %d NICs) = %v, want nil at the limit", nics, err)
	}
	err := CheckDeviceCount(1, nics+1)
	if want := fmt.Sprintf("the pod has %d network interfaces, but its VM has interrupt lines for %d", nics+1, nics); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("CheckDeviceCount(volumes, %d NICs) = %v, want it to contain %q", nics+1, err, want)
	}
}

func TestParseManifestIsolatorWithoutValue(t *testing.T) {
	// The appc schema panics on this manifest.
	_, err := ParseManifest([]byte(`{"acKind":"PodManifest","acVersion":"1.30.0","apps":[{"name":"a","app":{"isolators":[{"name":"resource/memory"}]}}]}`))
	if want := `isolator "resource/memory" has no value`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error = %v, want it to contain %q", err, want)
	}
}
