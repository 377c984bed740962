package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// AddViews mounts more views into a share while QEMU runs, for an app that
// joins a mutable pod. The views go into the mount namespace of process
// pid, QEMU's, where MountInNewNamespace made the share. A view whose
// mount point there is already a mount, such as a volume that another app
// mounts too, is left as it is.
//
// Each source is cloned in the caller's namespace, where rkt mounted the
// app's rootfs after QEMU started, and then attached in QEMU's.
func (s *Share) AddViews(pid int, views []View) error {
	type clone struct {
		view View
		fd   int
	}
	var clones []clone
	defer func() {
		for _, c := range clones {
			unix.Close(c.fd)
		}
	}()
	for _, v := range views {
		if err := s.makeMountPoint(v); err != nil {
			return err
		}
		fd, err := cloneTree(v)
		if err != nil {
			return err
		}
		clones = append(clones, clone{v, fd})
	}
	return inMountNamespace(pid, func() error {
		for _, c := range clones {
			target := filepath.Join(s.Dir, c.view.Path())
			mounted, err := isMountPoint(target)
			if err != nil {
				return err
			}
			if mounted {
				continue
			}
			if err := unix.MoveMount(c.fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach %s on %s: %w", c.view.Source, target, err)
			}
		}
		return nil
	})
}

// RemoveView unmounts a view in the mount namespace of process pid and
// removes its mount point, so that rkt can unmount and delete what the
// view showed. A view that is not mounted is only removed.
func (s *Share) RemoveView(pid int, v View) error {
	target := filepath.Join(s.Dir, v.Path())
	err := inMountNamespace(pid, func() error {
		mounted, err := isMountPoint(target)
		if err != nil || !mounted {
			return err
		}
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove mount point %s: %w", target, err)
	}
	return nil
}

// cloneTree returns a detached copy of the view's source, with the view's
// attributes already set.
func cloneTree(v View) (int, error) {
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_SYMLINK_NOFOLLOW
	if v.Recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, v.Source, uint(flags))
	if err != nil {
		return -1, fmt.Errorf("clone %s for %s: %w", v.Source, v.Name, err)
	}
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if v.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set the attributes of the clone of %s: %w", v.Source, err)
	}
	return fd, nil
}

// isMountPoint reports whether path is the root of a mount, comparing its
// mount id with its parent's.
func isMountPoint(path string) (bool, error) {
	var st, parent unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Statx(unix.AT_FDCWD, filepath.Dir(path), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &parent); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(path), err)
	}
	return st.Mnt_id != parent.Mnt_id, nil
}

// inMountNamespace runs f on a thread that joined the mount namespace of
// process pid. The thread stays locked and is discarded when f returns.
func inMountNamespace(pid int, f func() error) error {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("open the mount namespace of process %d: %w", pid, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: Go ends the thread, with its namespace, when
		// this goroutine returns.
		runtime.LockOSThread()
		// Go's threads share their file system attributes, which setns
		// into a mount namespace refuses.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare the file system attributes: %w", err)
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("join the mount namespace of process %d: %w", pid, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
