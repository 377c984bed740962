// Package boot is the guest's PID 1 until it execs systemd: it mounts the
// API file systems and the pod's shares, sends the host its sign of life,
// installs the pod's units and hands over to systemd.
package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/init/ports"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/inroot"
	"github.com/stage1-vm/stage1-vm/internal/report"
)

// Systemd is the path of systemd in the guest system.
const Systemd = "/lib/systemd/systemd"

// ninepOptions mounts a 9p share over virtio. cache=loose with a 256 KiB
// msize halved the start time of a pod against cache=none on a 2-core TCG
// host; each share is written by one guest only.
const ninepOptions = "trans=virtio,version=9p2000.L,msize=262144,cache=loose"

// volumeOptions mounts the volume share, which the host can change at any
// time, without a page cache except for mmap.
const volumeOptions = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// Run prepares the guest and execs systemd. It returns only on error.
func Run() error {
	for _, m := range []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := doMount(m); err != nil {
			return err
		}
	}
	for _, m := range []mount{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := doMount(m); err != nil {
			return err
		}
	}

	// devtmpfs has the device nodes; these links come from udev on a
	// normal system, and apps expect them.
	for link, target := range map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
		"/dev/core":   "/proc/kcore",
	} {
		if err := os.Symlink(target, link); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create %s: %w", link, err)
		}
	}

	if err := sendHello(); err != nil {
		return err
	}

	if err := doMount(mount{guestconfig.ConfigTag, guestconfig.GuestConfigDir, "9p", unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV, ninepOptions}); err != nil {
		return err
	}
	pod, err := guestconfig.Load(filepath.Join(guestconfig.GuestConfigDir, guestconfig.FileName))
	if err != nil {
		return err
	}

	if pod.Volumes {
		// No page cache for volumes: the host and other pods may change them.
		if err := doMount(mount{guestconfig.VolumesTag, guestconfig.GuestVolumesDir, "9p", unix.MS_NOSUID | unix.MS_NODEV, volumeOptions}); err != nil {
			return err
		}
	}
	if err := mountJournal(pod); err != nil {
		return err
	}
	if err := doMount(mount{"tmpfs", guestconfig.GuestAppsDir, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"}); err != nil {
		return err
	}
	for _, app := range pod.Apps {
		if err := mountApp(pod, app); err != nil {
			return fmt.Errorf("app %s: %w", app.Name, err)
		}
	}

	if err := unix.Sethostname([]byte(pod.Hostname)); err != nil {
		return fmt.Errorf("set hostname %q: %w", pod.Hostname, err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	if err := configureInterfaces(pod.Interfaces); err != nil {
		return err
	}
	if err := installUnits(); err != nil {
		return err
	}
	if err := os.MkdirAll(guestconfig.GuestRunDir, 0o700); err != nil {
		return err
	}

	// systemd logs to /dev/kmsg until journald runs, then to the journal.
	// Without --debug the kernel's loglevel=3 keeps its messages off the
	// console, and they still reach the journal.
	args := []string{Systemd, "--unit=stage1-vm.target", "--log-level=info"}
	if pod.Debug {
		args = append(args, "--show-status=true")
	} else {
		args = append(args, "--show-status=false")
	}
	env := []string{"container_host=stage1-vm"}
	if err := unix.Exec(Systemd, args, env); err != nil {
		return fmt.Errorf("exec %s: %w", Systemd, err)
	}
	return nil
}

// sendHello sends the host's boot watchdog its sign of life: the guest
// reached user space.
func sendHello() error {
	port, err := ports.Open(guestconfig.StatusPort, os.O_WRONLY)
	if err != nil {
		return err
	}
	defer port.Close()
	if _, err := port.WriteString(report.Message{Kind: report.Hello}.String() + "\n"); err != nil {
		return fmt.Errorf("send sign of life: %w", err)
	}
	return nil
}

// mountApp mounts the app's rootfs share and the API file systems inside it.
func mountApp(pod *guestconfig.Pod, app guestconfig.App) error {
	rootfs := app.RootfsPath()
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	var flags uintptr
	if app.ReadOnlyRootfs {
		// QEMU enforces it; the read-only mount only makes the errors plain.
		flags = unix.MS_RDONLY
	}
	if err := doMount(mount{app.MountTag, rootfs, "9p", flags, ninepOptions}); err != nil {
		return err
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

// installUnits copies the pod's units from the config share into the
// runtime unit folder, which systemd reads at start.
func installUnits() error {
	dst := "/run/systemd/system"
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	src := filepath.Join(guestconfig.GuestConfigDir, guestconfig.UnitsDir)
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("read units: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".service") && !strings.HasSuffix(e.Name(), ".target") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func doMount(m mount) error {
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", m.source, m.target, m.fstype, err)
	}
	return nil
}

// loopbackUp brings up lo, the only interface a pod has with --net=none.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("read flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// Fail reports a boot error on the console and reboots. The reboot ends
// QEMU, which runs with -no-reboot, and the host then reports the VM's exit
// without a pod status, with the console's last lines.
func Fail(err error) {
	fmt.Fprintf(os.Stderr, "stage1-vm-init: boot failed: %v\n", err)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}
