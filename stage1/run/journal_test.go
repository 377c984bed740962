package run

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const journalTestUUID = "6ee58c77-c0fe-4567-82bd-6b08ed314883"

func TestMakeJournalDirCreatesFolder(t *testing.T) {
	podDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(podDir, Stage1RootfsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	path, err := makeJournalDir(podDir, journalTestUUID)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(podDir, "stage1/rootfs/var/log/journal/6ee58c77c0fe456782bd6b08ed314883")
	if path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	if info, err := os.Lstat(want); err != nil || !info.IsDir() {
		t.Errorf("journal folder %s not created: %v", want, err)
	}
}

func TestMakeJournalDirRejectsSymlinkOut(t *testing.T) {
	for _, link := range []string{"var", "var/log"} {
		t.Run(link, func(t *testing.T) {
			podDir, outside := t.TempDir(), t.TempDir()
			linkPath := filepath.Join(podDir, Stage1RootfsDir, link)
			if err := os.MkdirAll(filepath.Dir(linkPath), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, linkPath); err != nil {
				t.Fatal(err)
			}

			_, err := makeJournalDir(podDir, journalTestUUID)
			if err == nil || !strings.Contains(err.Error(), "outside the stage1 rootfs") {
				t.Errorf("error = %v, want one saying the folder resolves outside the stage1 rootfs", err)
			}
			entries, err := os.ReadDir(outside)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("the folder outside the pod got %d entries, want none", len(entries))
			}
		})
	}
}
