package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/inroot"
)

// WriteHosts gives an app whose image has no /etc/hosts one that maps
// localhost and the pod's hostname to the loopback addresses, as rkt's
// default stage1 does. An image's own /etc/hosts is kept. The file is
// created inside the app rootfs without following a link out of it.
func WriteHosts(podDir, app, hostname string) error {
	rootfs := filepath.Join(podDir, AppRootfs(app))
	root, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("app %s: open rootfs: %w", app, err)
	}
	defer root.Close()

	etc, err := inroot.OpenAt(root, "etc", unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		if err := unix.Mkdirat(int(root.Fd()), "etc", 0o755); err != nil {
			return fmt.Errorf("app %s: create /etc: %w", app, err)
		}
		etc, err = inroot.OpenAt(root, "etc", unix.O_PATH|unix.O_DIRECTORY)
	}
	if err != nil {
		return fmt.Errorf("app %s: open /etc in the image: %w", app, err)
	}
	defer etc.Close()

	if _, err := inroot.OpenAt(root, "etc/hosts", unix.O_PATH); err == nil {
		return nil
	}
	fd, err := unix.Openat(int(etc.Fd()), "hosts", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EEXIST) {
		// A link whose target is missing: the image has its own idea.
		return nil
	}
	if err != nil {
		return fmt.Errorf("app %s: create /etc/hosts: %w", app, err)
	}
	f := os.NewFile(uintptr(fd), "hosts")
	defer f.Close()
	content := "127.0.0.1\tlocalhost localhost.localdomain\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"127.0.0.1\t" + hostname + "\n"
	if _, err := f.WriteString(content); err != nil {
		return fmt.Errorf("app %s: write /etc/hosts: %w", app, err)
	}
	return nil
}
