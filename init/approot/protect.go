package approot

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/inroot"
)

// Kernel interfaces that are read-only or hidden in an app, unless the
// pod runs with --disable-paths. The guest kernel belongs to the pod alone,
// but an app should not change or read what the other apps of the pod
// depend on, as with rkt's default stage1.
var (
	readOnlyKernelPaths = []string{
		"/proc/bus",
		"/proc/sys/kernel/core_pattern",
		"/proc/sys/kernel/modprobe",
		"/proc/sys/vm/panic_on_oom",
		"/proc/sysrq-trigger",
	}
	hiddenKernelPaths = []string{
		"/proc/config.gz",
		"/proc/kallsyms",
		"/proc/kcore",
		"/proc/sched_debug",
		"/proc/timer_list",
		"/sys/firmware",
		"/sys/fs",
		"/sys/hypervisor",
		"/sys/kernel/debug",
		"/sys/module",
		"/sys/power",
	}
)

// protectKernelPaths makes the kernel paths above read-only or hides them
// in the app's rootfs, whose proc and sysfs are already mounted. A path the
// guest kernel lacks is skipped.
func protectKernelPaths(rootfs string) error {
	root, err := os.Open(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, p := range readOnlyKernelPaths {
		if err := onPath(root, p, func(f *os.File, _ os.FileInfo) error {
			return remountReadOnly(f)
		}); err != nil {
			return err
		}
	}
	for _, p := range hiddenKernelPaths {
		if err := onPath(root, p, hide); err != nil {
			return err
		}
	}
	return nil
}

// onPath calls fn with path opened inside root, or does nothing when path
// does not exist.
func onPath(root *os.File, path string, fn func(*os.File, os.FileInfo) error) error {
	f, err := inroot.OpenAt(root, path, unix.O_PATH)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("protect %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("protect %s: %w", path, err)
	}
	if err := fn(f, info); err != nil {
		return fmt.Errorf("protect %s: %w", path, err)
	}
	return nil
}

// remountReadOnly puts a read-only bind of f on top of f.
func remountReadOnly(f *os.File) error {
	tree, err := unix.OpenTree(int(f.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return err
	}
	return unix.MoveMount(tree, "", int(f.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// hide covers a folder with an empty read-only tmpfs and a file with
// /dev/null.
func hide(f *os.File, info os.FileInfo) error {
	at := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if info.IsDir() {
		return doMount(mount{"tmpfs", at, "tmpfs", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "size=0,mode=0555"})
	}
	return doMount(mount{"/dev/null", at, "", unix.MS_BIND, ""})
}
