package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/appc/spec/aci"
	"github.com/appc/spec/schema"

	"github.com/stage1-vm/stage1-vm/internal/tartree"
)

// writeManifest fills in the template and validates it as an appc image
// manifest before writing it.
func writeManifest(o options, dst string) error {
	tmpl, err := os.ReadFile(o.manifestTemplate)
	if err != nil {
		return err
	}
	data := []byte(strings.ReplaceAll(string(tmpl), "@VERSION@", o.version))
	var im schema.ImageManifest
	if err := json.Unmarshal(data, &im); err != nil {
		return fmt.Errorf("invalid image manifest from %s: %w", o.manifestTemplate, err)
	}
	return os.WriteFile(dst, data, 0o644)
}

// sourceDateEpoch returns the mtime of every tar entry, from
// SOURCE_DATE_EPOCH when set, so that the same inputs give the same bytes.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid SOURCE_DATE_EPOCH=%q: expected seconds since 1970", v)
	}
	return time.Unix(n, 0), nil
}

// writeACI writes the staged tree as a gzip-compressed tar with sorted
// entries, owner 0 and fixed mtimes, validates it with the appc spec's
// archive validator and moves it into place.
func writeACI(stage, out string) error {
	mtime, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	gz, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	if err := tartree.AddTree(tw, stage, "", mtime); err != nil {
		f.Close()
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := validateACI(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func validateACI(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	if err := aci.ValidateArchive(tar.NewReader(gz)); err != nil {
		return fmt.Errorf("the ACI fails appc validation: %w", err)
	}
	return nil
}
