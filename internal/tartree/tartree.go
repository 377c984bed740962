// Package tartree writes folder trees into tar archives, as image files
// need them: owner 0, a fixed mtime, symlinks stored as links.
package tartree

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// AddTree adds every entry below root, in sorted order, under prefix. The
// root itself is not added.
func AddTree(tw *tar.Writer, root, prefix string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if err := AddEntry(tw, p, filepath.ToSlash(filepath.Join(prefix, rel)), mtime); err != nil {
			return err
		}
	}
	return nil
}

// AddEntry adds the file, folder or symlink at path to tw under name.
func AddEntry(tw *tar.Writer, path, name string, mtime time.Time) error {
	info, err := os.Lstat(path)
	if err != nil {
		return err
	}
	link := ""
	if info.Mode()&os.ModeSymlink != 0 {
		if link, err = os.Readlink(path); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if info.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = mtime, time.Time{}, time.Time{}
	hdr.Format = tar.FormatPAX
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(tw, in)
	return err
}

// ExtractEntry writes the entry hdr, whose content tr is at, to path. It
// handles folders, regular files and symlinks, which are all that image
// trees written by AddTree contain, and rejects a name with "..".
func ExtractEntry(tr *tar.Reader, hdr *tar.Header, path string) error {
	if strings.Contains(hdr.Name, "..") {
		return fmt.Errorf("invalid entry name %q", hdr.Name)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(hdr.Mode) & os.ModePerm
	switch hdr.Typeflag {
	case tar.TypeDir:
		return os.MkdirAll(path, mode)
	case tar.TypeSymlink:
		return os.Symlink(hdr.Linkname, path)
	case tar.TypeReg:
		out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	return fmt.Errorf("unsupported type %q of entry %q", hdr.Typeflag, hdr.Name)
}
