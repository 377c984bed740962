package tartree

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAddTreeSortedAndOwnedByRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "b/c/file"), []byte("content"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b/c/file", filepath.Join(root, "a-link")); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	if err := AddTree(tw, root, "rootfs", mtime); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}

	want := []string{"rootfs/a-link", "rootfs/b/", "rootfs/b/c/", "rootfs/b/c/file"}
	tr := tar.NewReader(&buf)
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Errorf("got %d entries, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) || hdr.Name != want[i] {
			t.Errorf("entry %d = %q, want %v in order", i, hdr.Name, want)
			continue
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(mtime) {
			t.Errorf("%s: uid %d gid %d mtime %v, want 0 0 %v", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime, mtime)
		}
		switch hdr.Name {
		case "rootfs/a-link":
			if hdr.Typeflag != tar.TypeSymlink || hdr.Linkname != "b/c/file" {
				t.Errorf("link stored as type %c to %q", hdr.Typeflag, hdr.Linkname)
			}
		case "rootfs/b/c/file":
			data, _ := io.ReadAll(tr)
			if string(data) != "content" || hdr.Mode&0o777 != 0o640 {
				t.Errorf("file content %q mode %o", data, hdr.Mode)
			}
		}
	}
}
