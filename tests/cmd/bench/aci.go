package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/tartree"
)

// Paths inside the stage1 ACI.
const (
	aciQEMUDir   = "rootfs/stage1-vm/host/qemu/"
	aciKernel    = "rootfs/stage1-vm/host/kernel/bzImage"
	aciKernelDir = "rootfs/stage1-vm/host/kernel/"
	aciGuestDir  = "rootfs/stage1-vm/guest/"
	aciCNIDir    = "rootfs/usr/lib/rkt/plugins/net/"
)

// imagePart is one part of the unpacked image and the sum of its regular
// file sizes in bytes.
type imagePart struct {
	Name  string
	Bytes int64
}

// imageSizes are the sizes of the ACI file and of its unpacked content.
type imageSizes struct {
	FileBytes     int64
	UnpackedBytes int64
	Parts         []imagePart
}

// scanACI reads the stage1 ACI once: it sums the unpacked file sizes by
// part, copies the QEMU bundle into qemuDir and the kernel to kernelPath.
func scanACI(aciPath, qemuDir, kernelPath string) (imageSizes, error) {
	var sizes imageSizes
	f, err := os.Open(aciPath)
	if err != nil {
		return sizes, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return sizes, err
	}
	sizes.FileBytes = info.Size()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return sizes, fmt.Errorf("read %s: %w", aciPath, err)
	}

	parts := []imagePart{
		{Name: "QEMU with its libraries, modules and firmware"},
		{Name: "guest kernel"},
		{Name: "guest system (systemd, its libraries, guest init)"},
		{Name: "CNI plugins"},
		{Name: "host entrypoints and manifest"},
	}
	partOf := func(name string) *imagePart {
		switch {
		case strings.HasPrefix(name, aciQEMUDir):
			return &parts[0]
		case strings.HasPrefix(name, aciKernelDir):
			return &parts[1]
		case strings.HasPrefix(name, aciGuestDir):
			return &parts[2]
		case strings.HasPrefix(name, aciCNIDir):
			return &parts[3]
		}
		return &parts[4]
	}

	foundKernel := false
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sizes, fmt.Errorf("read %s: %w", aciPath, err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if hdr.Typeflag == tar.TypeReg {
			sizes.UnpackedBytes += hdr.Size
			partOf(name).Bytes += hdr.Size
		}
		target := ""
		if name == aciKernel {
			target = kernelPath
			foundKernel = true
		} else if rel, ok := strings.CutPrefix(name, aciQEMUDir); ok && rel != "" {
			target = filepath.Join(qemuDir, rel)
		}
		if target != "" {
			if err := tartree.ExtractEntry(tr, hdr, target); err != nil {
				return sizes, fmt.Errorf("extract %s from %s: %w", name, aciPath, err)
			}
		}
	}
	if !foundKernel {
		return sizes, fmt.Errorf("%s has no %s", aciPath, aciKernel)
	}
	sizes.Parts = parts
	return sizes, nil
}

// copyFile copies src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// checkSameFile returns an error unless the two files have the same content.
func checkSameFile(a, b string) error {
	dataA, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	dataB, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(dataA, dataB) {
		return fmt.Errorf("%s differs from the image's kernel", a)
	}
	return nil
}

// kernelVersion returns the release ("6.1.192") from the version string
// that a bzImage carries. The 16-bit field at 0x20E of the setup header is
// the string's offset minus 0x200 (Linux boot protocol 2.00 and later).
func kernelVersion(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(data) < 0x210 || string(data[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("%s is not a bzImage: no HdrS setup header", path)
	}
	offset := (int(data[0x20E]) | int(data[0x20F])<<8) + 0x200
	if offset >= len(data) {
		return "", fmt.Errorf("%s: kernel version offset %#x is past the end", path, offset)
	}
	version, _, _ := bytes.Cut(data[offset:], []byte{0})
	release, _, _ := bytes.Cut(version, []byte(" "))
	if len(release) == 0 || len(release) > 64 {
		return "", fmt.Errorf("%s: no kernel release at offset %#x", path, offset)
	}
	return string(release), nil
}
