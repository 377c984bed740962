package tests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// TestDNSConfModeStage0 gives a read-only app without /etc/resolv.conf the
// files rkt writes for --dns and --hosts-entry; the hosts file gets the
// pod's hostname too.
func TestDNSConfModeStage0(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "dns", "/bin/sh", "-c", "cat /etc/resolv.conf; echo --; cat /etc/hosts")
	app.ReadOnlyRootFS = true
	res, err := d.Run([]stage0.App{app}, stage0.Options{
		Env:  tcg,
		Args: []string{"--net=none", "--hostname=dnspod", "--dns-conf-mode=resolv=stage0,hosts=stage0"},
		Stage1Files: map[string]string{
			"etc/rkt-resolv.conf": "nameserver 192.0.2.53\nsearch example.com\n",
			"etc/rkt-hosts":       "192.0.2.7\tdb\n",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, res, "nameserver 192.0.2.53\nsearch example.com\n--\n192.0.2.7\tdb\n127.0.0.1\tdnspod\n")
}

// TestDNSConfModeHostAndDefault checks that host mode replaces the image's
// files with the host's, and that the default mode keeps the image's.
func TestDNSConfModeHostAndDefault(t *testing.T) {
	d := newDriver(t)
	image := filepath.Join(t.TempDir(), "image")
	if err := stage0.BusyboxImage(image); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(image, "etc/resolv.conf"), []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(image, "etc/hosts"), []byte("192.0.2.2\timage-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	app := stage0.App{Name: "dns", Image: image, App: types.App{
		Exec: []string{"/bin/sh", "-c", "cat /etc/resolv.conf /etc/hosts"}, User: "0", Group: "0",
	}}

	res := run(t, d, []stage0.App{app}, []string{"--net=none", "--dns-conf-mode=resolv=host,hosts=host"})
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	hostHosts, _ := os.ReadFile("/etc/hosts")
	if want := string(hostResolv) + string(hostHosts); res.Stdout != want {
		t.Errorf("host mode: stdout = %q, want the host's files %q", res.Stdout, want)
	}

	res = run(t, d, []stage0.App{app}, nil)
	if want := "nameserver 192.0.2.1\n192.0.2.2\timage-host\n"; res.Stdout != want {
		t.Errorf("default mode: stdout = %q, want the image's files %q", res.Stdout, want)
	}
}
