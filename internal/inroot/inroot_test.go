package inroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenStaysInRoot(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"abs":      filepath.Join(outside, "secret"),
		"rel":      "../../../../../../../../" + outside + "/secret",
		"bin/up":   "../../secret",
		"bin/root": "/secret",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}

	for name := range links {
		f, err := Open(root, name, os.O_RDONLY)
		if err != nil {
			// A link whose target does not exist inside root fails, which is also safe.
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open(%q): unexpected error %v", name, err)
			}
			continue
		}
		buf := make([]byte, 16)
		n, _ := f.Read(buf)
		f.Close()
		if string(buf[:n]) == "host" {
			t.Errorf("Open(%q) escaped the root and read the host file", name)
		}
	}

	f, err := Open(root, "/bin/../../../secret", os.O_RDONLY)
	if err != nil {
		t.Fatalf("Open with dot-dot: %v", err)
	}
	buf := make([]byte, 16)
	n, _ := f.Read(buf)
	f.Close()
	if string(buf[:n]) != "image" {
		t.Errorf("Open with dot-dot read %q, want the image's file", buf[:n])
	}
}

func TestMakeTargetStaysInRoot(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	for name, target := range map[string]string{
		"abs":    outside,
		"rel":    "../../../../../../../.." + outside,
		"loop":   "loop",
		"upfile": "../etc/file",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	rootDir, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rootDir.Close()

	cases := []struct {
		target string
		dir    bool
		// want is where the target must land, relative to root; empty
		// means MakeTarget must fail.
		want string
	}{
		{"/data", true, "data"},
		{"/a/b/c", true, "a/b/c"},
		{"/abs/x", true, filepath.Join(strings.TrimPrefix(outside, "/"), "x")},
		{"/rel/y", true, filepath.Join(strings.TrimPrefix(outside, "/"), "y")},
		{"/../../z", true, "z"},
		{"/upfile", false, "etc/file"},
		{"/etc/conf", false, "etc/conf"},
		{"/loop/x", true, ""},
	}
	for _, c := range cases {
		f, err := MakeTarget(rootDir, c.target, c.dir)
		if c.want == "" {
			if err == nil {
				f.Close()
				t.Errorf("MakeTarget(%q) succeeded, want an error", c.target)
			}
			continue
		}
		if err != nil {
			t.Errorf("MakeTarget(%q): %v", c.target, err)
			continue
		}
		f.Close()
		info, err := os.Lstat(filepath.Join(root, c.want))
		if err != nil {
			t.Errorf("MakeTarget(%q) did not create %s in the root: %v", c.target, c.want, err)
			continue
		}
		if info.IsDir() != c.dir {
			t.Errorf("MakeTarget(%q) made %s with mode %s, want dir=%v", c.target, c.want, info.Mode(), c.dir)
		}
	}
	entries, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("MakeTarget created %d entries outside the root", len(entries))
	}
}
