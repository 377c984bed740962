package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteACIDeterministic(t *testing.T) {
	dir := t.TempDir()
	stage := filepath.Join(dir, "stage")
	if err := os.MkdirAll(filepath.Join(stage, "rootfs/rkt/status"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := options{manifestTemplate: "../aci-manifest/manifest.json.in", version: "1.2.3"}
	if err := writeManifest(o, filepath.Join(stage, "manifest")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "rootfs/file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")

	var images [][]byte
	for i := 0; i < 2; i++ {
		out := filepath.Join(dir, "image.aci")
		if err := writeACI(stage, out); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, data)
		// A later mtime on disk must not change the archive.
		if err := os.Chtimes(filepath.Join(stage, "rootfs/file"), time.Now(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Error("two builds of the same tree differ")
	}
}

func TestWriteManifestRejectsInvalid(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "manifest.json.in")
	if err := os.WriteFile(tmpl, []byte(`{"acKind":"ImageManifest","acVersion":"0.8.11","name":"Not A Name"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeManifest(options{manifestTemplate: tmpl}, filepath.Join(dir, "manifest")); err == nil {
		t.Error("writeManifest accepted an invalid image name")
	}
}
