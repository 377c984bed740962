// Package inroot opens paths inside a directory tree that an image or the
// guest controls, without ever following a symlink or ".." out of that tree.
package inroot

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open opens path inside root as if root were "/": absolute symlinks and ".."
// resolve against root (openat2 RESOLVE_IN_ROOT), and the result is never
// outside it. flags are open(2) flags; O_CLOEXEC is always added.
func Open(root, path string, flags int) (*os.File, error) {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	return openAt(rootFD, root, path, flags)
}

// OpenAt is Open with the root given as an open directory.
func OpenAt(root *os.File, path string, flags int) (*os.File, error) {
	return openAt(int(root.Fd()), root.Name(), path, flags)
}

func openAt(rootFD int, rootName, path string, flags int) (*os.File, error) {
	fd, err := unix.Openat2(rootFD, path, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path + " in " + rootName, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Stat returns the file info of path inside root, following symlinks only
// within root.
func Stat(root, path string) (os.FileInfo, error) {
	f, err := Open(root, path, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}
