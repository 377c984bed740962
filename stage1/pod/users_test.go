package pod

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func imageWithAccounts(t *testing.T, passwd, group string) string {
	t.Helper()
	rootfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if passwd != "" {
		if err := os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte(passwd), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if group != "" {
		if err := os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte(group), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return rootfs
}

const testPasswd = "root:x:0:0:root:/root:/bin/ash\n# comment\nwww:x:33:33:web:/var/www:/usr/sbin/nologin\nbroken:x:notanumber:1::/:/bin/sh\n"
const testGroup = "root:x:0:\nwww:x:33:\nstaff:x:50:www\n"

func TestResolveUser(t *testing.T) {
	rootfs := imageWithAccounts(t, testPasswd, testGroup)
	cases := []struct {
		user string
		want account
	}{
		{"www", account{uid: 33, name: "www", home: "/var/www", shell: "/usr/sbin/nologin"}},
		{"33", account{uid: 33, name: "www", home: "/var/www", shell: "/usr/sbin/nologin"}},
		{"root", account{uid: 0, name: "root", home: "/root", shell: "/bin/ash"}},
		{"1234", account{uid: 1234, name: "1234", home: "/", shell: "/bin/sh"}},
	}
	for _, c := range cases {
		got, err := resolveUser(rootfs, c.user)
		if err != nil {
			t.Errorf("resolveUser(%q): %v", c.user, err)
			continue
		}
		if got != c.want {
			t.Errorf("resolveUser(%q) = %+v, want %+v", c.user, got, c.want)
		}
	}
}

func TestResolveUserRootWithoutPasswd(t *testing.T) {
	got, err := resolveUser(t.TempDir(), "root")
	if err != nil {
		t.Fatal(err)
	}
	if got.uid != 0 || got.home != "/root" {
		t.Errorf("root without passwd = %+v", got)
	}
}

func TestResolveUserRejects(t *testing.T) {
	rootfs := imageWithAccounts(t, testPasswd, testGroup)
	for user, want := range map[string]string{
		"nobody-here": `user "nobody-here" not found in the image's /etc/passwd`,
		"broken":      `invalid uid "notanumber"`,
		"/no/file":    "not found in the image",
	} {
		if _, err := resolveUser(rootfs, user); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("resolveUser(%q) error = %v, want it to contain %q", user, err, want)
		}
	}
}

func TestResolveUserIgnoresHostPasswd(t *testing.T) {
	// An image whose /etc/passwd links to the host's must resolve the link
	// inside the image, where it points to nothing.
	rootfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(rootfs, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveUser(rootfs, "daemon"); err == nil {
		t.Error("resolveUser read the host's /etc/passwd through a symlink in the image")
	}
}

func TestResolveGroup(t *testing.T) {
	rootfs := imageWithAccounts(t, testPasswd, testGroup)
	for group, want := range map[string]uint32{"staff": 50, "www": 33, "7": 7, "root": 0} {
		got, err := resolveGroup(rootfs, group)
		if err != nil || got != want {
			t.Errorf("resolveGroup(%q) = %d, %v; want %d", group, got, err, want)
		}
	}
	if _, err := resolveGroup(rootfs, "nogroup"); err == nil || !strings.Contains(err.Error(), `group "nogroup" not found`) {
		t.Errorf("resolveGroup(nogroup) error = %v", err)
	}
}

func TestResolveByPathOwner(t *testing.T) {
	rootfs := t.TempDir()
	file := filepath.Join(rootfs, "owned")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if err := os.Chown(file, 4321, 8765); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	wantUID, wantGID := statIDs(info)
	acct, err := resolveUser(rootfs, "/owned")
	if err != nil || acct.uid != wantUID {
		t.Errorf("resolveUser(/owned) = %+v, %v; want uid %d", acct, err, wantUID)
	}
	gid, err := resolveGroup(rootfs, "/owned")
	if err != nil || gid != wantGID {
		t.Errorf("resolveGroup(/owned) = %d, %v; want %d", gid, err, wantGID)
	}
}

func statIDs(info os.FileInfo) (uint32, uint32) {
	st := info.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}
