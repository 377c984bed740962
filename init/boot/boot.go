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

	"github.com/stage1-vm/stage1-vm/init/approot"
	"github.com/stage1-vm/stage1-vm/init/ports"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/report"
)

// Systemd is the path of systemd in the guest system.
const Systemd = "/lib/systemd/systemd"

const ninepOptions = approot.NinePOptions

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
	// Without nosuid: the apps' rootfs keep their setuid programs.
	if err := doMount(mount{guestconfig.AppsTag, guestconfig.GuestAppShareDir, "9p", 0, ninepOptions}); err != nil {
		return err
	}
	if err := doMount(mount{"tmpfs", guestconfig.GuestAppsDir, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"}); err != nil {
		return err
	}
	for _, app := range pod.Apps {
		if err := approot.Attach(pod, app, guestconfig.GuestAppShareDir); err != nil {
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
	return approot.Do(m.source, m.target, m.fstype, m.flags, m.data)
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
