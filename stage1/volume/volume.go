// Package volume exports a pod's volumes to its guest through one 9p share.
//
// Each volume an app mounts becomes a view in the share folder: rw/<name>
// or ro/<name>. The views are bind mounts made in a mount namespace of
// their own, entered by the thread that starts QEMU, so the host's mount
// table never holds them and they vanish with QEMU, even after a crash. A
// read-only view is a read-only bind mount: the host kernel refuses the
// write, whatever the guest does. The share folder is itself bound
// read-only, so the guest cannot add entries next to the views.
//
// One share for every volume keeps the pod within microvm's interrupt
// lines, which each further virtio device would use up.
package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// View is one volume as exported to the guest, read-write or read-only.
type View struct {
	// Name is the volume name from the pod manifest.
	Name string
	// Source is the host file or folder the view shows.
	Source string
	// ReadOnly makes the view a read-only bind mount.
	ReadOnly bool
	// Recursive binds the mounts under Source too, as rkt does by default.
	Recursive bool
	// File is set when Source is a regular file rather than a folder.
	File bool
}

// Path returns the view's path inside the share.
func (v View) Path() string {
	if v.ReadOnly {
		return "ro/" + v.Name
	}
	return "rw/" + v.Name
}

// Share is the folder that holds a pod's views.
type Share struct {
	// Dir is the folder QEMU exports.
	Dir   string
	Views []View
}

// Prepare creates the share folder and one empty mount point per view, in
// the host's mount namespace. Nothing is mounted yet.
func (s *Share) Prepare() error {
	for _, sub := range []string{"rw", "ro"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("create share %s: %w", s.Dir, err)
		}
	}
	for _, v := range s.Views {
		if err := s.makeMountPoint(v); err != nil {
			return err
		}
	}
	return nil
}

func (s *Share) makeMountPoint(v View) error {
	target := filepath.Join(s.Dir, v.Path())
	if v.File {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return fmt.Errorf("create mount point of %s: %w", v.Name, err)
		}
		return f.Close()
	}
	if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create mount point of %s: %w", v.Name, err)
	}
	return nil
}

// MountInNewNamespace moves the calling thread into a new mount namespace
// and mounts the views of each share there. The caller must hold its OS
// thread locked and never unlock it, so that the thread, with the
// namespace, is discarded when the caller's goroutine ends. Processes the
// thread starts afterwards, QEMU among them, inherit the namespace.
func MountInNewNamespace(shares ...*Share) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("create a mount namespace for the shares: %w", err)
	}
	// Nothing mounted from here on propagates back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the shares' mount namespace private: %w", err)
	}
	for _, s := range shares {
		if err := bind(s.Dir, s.Dir, false, true); err != nil {
			return err
		}
		for _, v := range s.Views {
			if err := bind(v.Source, filepath.Join(s.Dir, v.Path()), v.Recursive, v.ReadOnly); err != nil {
				return fmt.Errorf("view %s: %w", v.Path(), err)
			}
		}
	}
	return nil
}

// bind mounts source on target, read-only when readOnly is set. A
// recursive read-only bind is read-only in every mount under it too.
func bind(source, target string, recursive, readOnly bool) error {
	flags := uintptr(unix.MS_BIND)
	if recursive {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(source, target, "", flags, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	setFlags := 0
	if recursive {
		setFlags = unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(-1, target, uint(setFlags), attr); err != nil {
		return fmt.Errorf("set the attributes of the bind mount on %s: %w", target, err)
	}
	return nil
}

// ParseMode parses the octal mode of an empty volume ("0755").
func ParseMode(mode string) (uint32, error) {
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("invalid mode %q: use an octal mode such as 0755", mode)
	}
	return uint32(m), nil
}

// CreateEmpty creates the folder of an empty volume with the mode and owner
// the pod manifest gives, as checked by the caller.
func CreateEmpty(dir string, mode, uid, gid uint32) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Lchown(dir, int(uid), int(gid)); err != nil {
		return fmt.Errorf("change the owner of %s: %w", dir, err)
	}
	// os.Chmod takes Go's mode bits, which put setuid, setgid and sticky
	// elsewhere than the octal mode does.
	if err := unix.Fchmodat(unix.AT_FDCWD, dir, mode, 0); err != nil {
		return fmt.Errorf("change the mode of %s: %w", dir, err)
	}
	return nil
}
