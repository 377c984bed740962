package tests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

func TestUserNameFromImage(t *testing.T) {
	d := newDriver(t)
	image := filepath.Join(t.TempDir(), "image")
	if err := stage0.BusyboxImage(image); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nworker:x:1000:1000:worker:/home/worker:/bin/sh\n",
		"etc/group":  "root:x:0:\nworkers:x:1000:\nextra:x:2000:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(image, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	app := stage0.App{Name: "worker", Image: image, App: types.App{
		Exec: []string{"/bin/sh", "-c",
			`echo "$(id -u) $(id -g) $(id -G) $HOME $USER $LOGNAME"; touch /bin/forbidden 2>/dev/null && echo wrote-bin || echo denied`},
		User:              "worker",
		Group:             "workers",
		SupplementaryGIDs: []int{2000},
	}}
	res := run(t, d, []stage0.App{app}, nil)
	wantOutput(t, res, "1000 1000 1000 2000 /home/worker worker worker\ndenied\n")
}

func TestUnknownUserFailsBeforeBoot(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "app", "/bin/true")
	app.App.User = "nosuchuser"
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 254 {
		t.Errorf("exit status %d, want 254", res.ExitCode)
	}
	want := `user "nosuchuser"`
	if !contains(res.Stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
	}
}

func TestReadOnlyRootfsEnforced(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "readonly", "/bin/sh", "-c",
		"touch /created 2>/dev/null && echo created || echo denied; echo ok > /tmp/in-tmp 2>/dev/null || echo tmp-denied")
	app.ReadOnlyRootFS = true
	pod, err := d.Start([]stage0.App{app}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	res, err := pod.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Stdout != "denied\ntmp-denied\n" {
		t.Errorf("stdout = %q, want both writes denied", res.Stdout)
	}
	if _, err := os.Stat(filepath.Join(pod.Dir, "stage1/rootfs/opt/stage2/readonly/rootfs/created")); err == nil {
		t.Error("a file created in a read-only rootfs reached the host")
	}
}

func TestDeviceFilesInApp(t *testing.T) {
	d := newDriver(t)
	script := `
for f in /dev/null /dev/zero /dev/urandom /dev/tty /dev/ptmx; do [ -c $f ] && echo "$f char" || echo "$f missing"; done
head -c 4 /dev/zero | wc -c
head -c 16 /dev/urandom | wc -c
echo to-null > /dev/null && echo null-ok
echo via-dev-stdout > /dev/stdout
echo via-dev-stderr > /dev/stderr
[ -d /dev/fd ] && echo fd-ok
`
	res := run(t, d, []stage0.App{busyboxApp(t, "devices", "/bin/sh", "-c", script)}, nil)
	want := "/dev/null char\n/dev/zero char\n/dev/urandom char\n/dev/tty char\n/dev/ptmx char\n4\n16\nnull-ok\nvia-dev-stdout\nfd-ok\n"
	if res.Stdout != want {
		t.Errorf("stdout = %q, want %q", res.Stdout, want)
	}
	if res.Stderr != "via-dev-stderr\n" {
		t.Errorf("stderr = %q, want via-dev-stderr", res.Stderr)
	}
}

func TestHostnameAndHosts(t *testing.T) {
	d := newDriver(t)
	withHosts := filepath.Join(t.TempDir(), "image")
	if err := stage0.BusyboxImage(withHosts); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withHosts, "etc/hosts"), []byte("10.1.2.3 from-image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	apps := []stage0.App{
		busyboxApp(t, "generated", "/bin/sh", "-c", "uname -n; cat /etc/hosts"),
		{Name: "kept", Image: withHosts, App: types.App{Exec: []string{"/bin/sh", "-c", "sleep 1; cat /etc/hosts"}, User: "0", Group: "0"}},
	}
	res := run(t, d, apps, []string{"--net=none", "--hostname=web-1"})
	wantOutput(t, res, "web-1\n127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\tweb-1\n10.1.2.3 from-image\n")
}
