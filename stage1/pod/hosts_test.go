package pod

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteHostsCreatesFile(t *testing.T) {
	podDir := t.TempDir()
	rootfs := filepath.Join(podDir, AppRootfs("a"))
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteHosts(podDir, "a", "web"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(rootfs, "etc/hosts"))
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\tweb\n"
	if string(data) != want {
		t.Errorf("/etc/hosts = %q, want %q", data, want)
	}
}

func TestWriteHostsKeepsImageFile(t *testing.T) {
	podDir := t.TempDir()
	etc := filepath.Join(podDir, AppRootfs("a"), "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte("10.0.0.1 db\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteHosts(podDir, "a", "web"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(etc, "hosts"))
	if string(data) != "10.0.0.1 db\n" {
		t.Errorf("the image's /etc/hosts was changed to %q", data)
	}
}

func TestWriteHostsStaysInRootfs(t *testing.T) {
	podDir := t.TempDir()
	outside := filepath.Join(podDir, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(podDir, AppRootfs("a"))
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	// /etc in the image is a link to a host folder by absolute path.
	if err := os.Symlink(outside, filepath.Join(rootfs, "etc")); err != nil {
		t.Fatal(err)
	}
	_ = WriteHosts(podDir, "a", "web")
	if _, err := os.Stat(filepath.Join(outside, "hosts")); err == nil {
		t.Error("WriteHosts followed the image's /etc link out of the rootfs")
	}
}
