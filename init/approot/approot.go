// Package approot mounts an app's rootfs in the guest: its view of the
// apps share, the API file systems, the protected kernel paths and the
// volumes. The guest's init does it for the pod's apps at boot, and the
// agent for an app added at run time.
package approot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/inroot"
)

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func doMount(m mount) error {
	return Do(m.source, m.target, m.fstype, m.flags, m.data)
}

// Do calls mount(2) and names the mount in its error.
func Do(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", source, target, fstype, err)
	}
	return nil
}

// NinePOptions mounts a 9p share over virtio. cache=loose with a 256 KiB
// msize halved the start time of a pod against cache=none on a 2-core TCG
// host; each share is written by one guest only.
const NinePOptions = "trans=virtio,version=9p2000.L,msize=262144,cache=loose"

// Attach binds the app's view of the apps share, mounted at shareDir, to
// its rootfs folder and mounts the API file systems and the app's volumes
// inside it.
func Attach(pod *guestconfig.Pod, app guestconfig.App, shareDir string) error {
	rootfs := app.RootfsPath()
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	view := filepath.Join(shareDir, app.View)
	if err := doMount(mount{view, rootfs, "", unix.MS_BIND, ""}); err != nil {
		return err
	}
	if app.ReadOnlyRootfs {
		// The host enforces it; the read-only mount only makes the errors plain.
		if err := doMount(mount{"", rootfs, "", unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY, ""}); err != nil {
			return err
		}
	}
	// The guest creates and resolves these targets in its own view of the
	// rootfs. A symlink in the image can only lead elsewhere in the guest,
	// never to the host.
	for _, m := range []mount{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, ""},
		{"/dev", "dev", "", unix.MS_BIND | unix.MS_REC, ""},
	} {
		target, err := securePath(rootfs, m.target)
		if err != nil {
			return err
		}
		m.target = target
		if err := doMount(m); err != nil {
			return err
		}
	}
	if !pod.DisablePaths {
		if err := protectKernelPaths(rootfs); err != nil {
			return err
		}
	}
	return mountVolumes(rootfs, app.Mounts)
}

// mountVolumes binds the app's volumes from the volume share onto their
// targets, which are resolved and created inside the app's rootfs.
func mountVolumes(rootfs string, mounts []guestconfig.Mount) error {
	if len(mounts) == 0 {
		return nil
	}
	root, err := os.Open(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, m := range mounts {
		if err := mountVolume(root, m); err != nil {
			return fmt.Errorf("volume %s at %s: %w", m.View, m.Target, err)
		}
	}
	return nil
}

func mountVolume(root *os.File, m guestconfig.Mount) error {
	target, err := inroot.MakeTarget(root, m.Target, !m.File)
	if err != nil {
		return err
	}
	defer target.Close()
	// A detached copy of the view, made read-only before it is attached
	// for a read-only mount. It then goes on the file the target
	// resolved to, never on a path that the image's symlinks could redirect.
	source := filepath.Join(guestconfig.GuestVolumesDir, m.View)
	if m.Config {
		source = filepath.Join(guestconfig.GuestConfigDir, m.View)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("clone %s: %w", source, err)
	}
	defer unix.Close(tree)
	if m.ReadOnly {
		// The host enforces it for the view; this makes the errors plain.
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
			return fmt.Errorf("make %s read-only: %w", source, err)
		}
	}
	if err := unix.MoveMount(tree, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach %s: %w", source, err)
	}
	return nil
}

// securePath creates dir inside rootfs if missing and returns its path. It
// rejects a dir that is a symlink, so that a mount never lands outside rootfs.
func securePath(rootfs, dir string) (string, error) {
	path := filepath.Join(rootfs, dir)
	info, err := os.Lstat(path)
	switch {
	case os.IsNotExist(err):
		if err := os.Mkdir(path, 0o755); err != nil {
			return "", err
		}
	case err != nil:
		return "", err
	case !info.IsDir():
		return "", fmt.Errorf("/%s in the app image is not a directory (mode %s)", dir, info.Mode())
	}
	return path, nil
}

// Detach unmounts the app.
func AttachAdded(pod *guestconfig.Pod, app guestconfig.App) error {
	session := filepath.Join(guestconfig.GuestRunDir, "share-"+app.Name)
	if err := os.MkdirAll(session, 0o700); err != nil {
		return err
	}
	defer os.Remove(session)
	if err := doMount(mount{guestconfig.AppsTag, session, "9p", 0, NinePOptions}); err != nil {
		return err
	}
	// The app's rootfs keeps the session alive after this.
	defer unix.Unmount(session, unix.MNT_DETACH)
	return Attach(pod, app, session)
}

// Detach unmounts the app's rootfs with everything mounted inside it and
// removes its folder.
func Detach(name string) error {
	app := guestconfig.App{Name: name}
	rootfs := app.RootfsPath()
	err := unix.Unmount(rootfs, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount the rootfs of app %s: %w", name, err)
	}
	if err := os.RemoveAll(filepath.Dir(rootfs)); err != nil {
		return fmt.Errorf("remove the rootfs folder of app %s: %w", name, err)
	}
	// The host reuses the device numbers of unmounted file systems, so an
	// app added again under this name can show the file ids of the
	// removed rootfs. The 9p client would take them for the cached files
	// of the removed rootfs, whose paths are gone on the host. Dropping
	// the unused cache entries, the removed rootfs's among them, avoids
	// that.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		return fmt.Errorf("drop the cached files of app %s: %w", name, err)
	}
	return nil
}
