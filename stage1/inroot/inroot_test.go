package inroot

import (
	"errors"
	"os"
	"path/filepath"
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
