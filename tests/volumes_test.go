package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

func acName(t *testing.T, s string) types.ACName {
	t.Helper()
	n, err := types.NewACName(s)
	if err != nil {
		t.Fatal(err)
	}
	return *n
}

func hostVolume(t *testing.T, name, source string, readOnly bool) types.Volume {
	return types.Volume{Name: acName(t, name), Kind: "host", Source: source, ReadOnly: &readOnly}
}

func emptyVolume(t *testing.T, name, mode string, uid, gid int) types.Volume {
	return types.Volume{Name: acName(t, name), Kind: "empty", Mode: &mode, UID: &uid, GID: &gid}
}

func runWithVolumes(t *testing.T, d *stage0.Driver, apps []stage0.App, volumes []types.Volume, args ...string) *stage0.Result {
	t.Helper()
	if args != nil {
		args = append([]string{"--net=none"}, args...)
	}
	res, err := d.Run(apps, stage0.Options{Env: tcg, Volumes: volumes, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestHostVolumes mounts a read-write folder, a read-only folder and a
// read-only single file, none of them declared as a mount point by the
// image. Root in the guest, with every capability and no system call
// filter, remounts the read-only folder read-write and still cannot write:
// the host enforces it.
func TestHostVolumes(t *testing.T) {
	d := newDriver(t)
	host := t.TempDir()
	rw, ro := filepath.Join(host, "rw"), filepath.Join(host, "ro")
	for _, dir := range []string{rw, ro} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ro, "input"), []byte("from-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(host, "app.conf")
	if err := os.WriteFile(conf, []byte("setting=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	app := busyboxApp(t, "vols", "/bin/sh", "-c", `
		echo written > /data/out/result
		cat /srv/input
		cat /etc/app.conf
		echo x > /srv/new 2>/dev/null && echo ro-write-ok || echo ro-write-denied
		mount -o remount,rw /srv && echo remounted
		echo x > /srv/new 2>/dev/null && echo ro-write-ok || echo ro-write-denied
		echo x > /etc/app.conf 2>/dev/null && echo file-write-ok || echo file-write-denied`)
	app.Mounts = []schema.Mount{
		{Volume: acName(t, "out"), Path: "/data/out"},
		{Volume: acName(t, "in"), Path: "/srv"},
		{Volume: acName(t, "conf"), Path: "/etc/app.conf"},
	}
	res := runWithVolumes(t, d, []stage0.App{app}, []types.Volume{
		hostVolume(t, "out", rw, false),
		hostVolume(t, "in", ro, true),
		hostVolume(t, "conf", conf, true),
	}, "--disable-capabilities-restriction", "--disable-seccomp")
	wantOutput(t, res, "from-host\nsetting=1\nro-write-denied\nremounted\nro-write-denied\nfile-write-denied\n")
	data, err := os.ReadFile(filepath.Join(rw, "result"))
	if err != nil || string(data) != "written\n" {
		t.Errorf("the write to the read-write volume did not reach the host: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Error("a write to the read-only volume reached the host")
	}
	if data, _ := os.ReadFile(conf); string(data) != "setting=1\n" {
		t.Errorf("the read-only file volume changed on the host: %q", data)
	}
}

// TestEmptyVolumesShared runs two apps on one empty volume with a mode and
// an owner, and an implicit empty volume for an undeclared mount point.
func TestEmptyVolumesShared(t *testing.T) {
	d := newDriver(t)
	writer := busyboxApp(t, "writer", "/bin/sh", "-c", "echo from-writer > /shared/note")
	writer.Mounts = []schema.Mount{{Volume: acName(t, "scratch"), Path: "/shared"}}
	reader := busyboxApp(t, "reader", "/bin/sh", "-c", `
		while ! test -e /mnt/s/note; do sleep 0.1; done
		cat /mnt/s/note
		stat -c "%a %u %g" /mnt/s
		stat -c "%a %u %g" /var/cache`)
	reader.Mounts = []schema.Mount{{Volume: acName(t, "scratch"), Path: "/mnt/s"}}
	reader.App.MountPoints = []types.MountPoint{{Name: acName(t, "cache"), Path: "/var/cache"}}
	res := runWithVolumes(t, d, []stage0.App{writer, reader}, []types.Volume{
		emptyVolume(t, "scratch", "1770", 1000, 2000),
	})
	wantOutput(t, res, "from-writer\n1770 1000 2000\n755 0 0\n")
}

// TestMountTargetThroughSymlinks gives the image links that point out of
// its rootfs, absolute and relative. The mounts land inside the rootfs and
// nothing is created on the host outside it.
func TestMountTargetThroughSymlinks(t *testing.T) {
	d := newDriver(t)
	image := filepath.Join(t.TempDir(), "image")
	if err := stage0.BusyboxImage(image); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(image, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../../../.."+outside, filepath.Join(image, "rel")); err != nil {
		t.Fatal(err)
	}
	app := stage0.App{Name: "links", Image: image, App: types.App{
		Exec: []string{"/bin/sh", "-c", "cat /abs/v/in; cat /rel/v/in; cat " + outside + "/v/in"},
		User: "0", Group: "0",
	}}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "in"), []byte("volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	app.Mounts = []schema.Mount{
		{Volume: acName(t, "v"), Path: "/abs/v"},
		{Volume: acName(t, "v"), Path: "/rel/v"},
	}
	res := runWithVolumes(t, d, []stage0.App{app}, []types.Volume{hostVolume(t, "v", src, true)})
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Stdout != "volume\nvolume\nvolume\n" {
		t.Errorf("stdout = %q, want the volume seen through both links", res.Stdout)
	}
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("a mount target was created outside the rootfs, in %s: %v", outside, entries)
	}
}

func TestMissingVolumeSourceFailsBeforeBoot(t *testing.T) {
	d := newDriver(t)
	missing := filepath.Join(t.TempDir(), "no-such-folder")
	app := busyboxApp(t, "app", "/bin/true")
	app.Mounts = []schema.Mount{{Volume: acName(t, "data"), Path: "/data"}}
	pod, err := d.Start([]stage0.App{app}, stage0.Options{Env: tcg, Volumes: []types.Volume{hostVolume(t, "data", missing, false)}})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	res, err := pod.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 254 {
		t.Errorf("exit status %d, want 254", res.ExitCode)
	}
	if !strings.Contains(res.Stderr, missing) {
		t.Errorf("stderr does not name %s:\n%s", missing, res.Stderr)
	}
	if strings.Contains(res.Stderr, "hello") || res.Ready {
		t.Error("the VM booted")
	}
	if _, err := os.Stat(filepath.Join(pod.Dir, "stage1-vm")); err == nil {
		t.Error("the pod's runtime folder was left behind")
	}
}
