package stage0

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BusyboxApplets are the commands linked to busybox in test images.
var BusyboxApplets = []string{"sh", "echo", "cat", "ls", "env", "sleep", "true", "false", "uname", "pwd", "printf", "id", "touch", "rm", "mkdir", "test", "kill", "trap", "seq", "wc", "head", "tr", "ifconfig", "nc", "pidof", "grep", "mount", "stat", "nproc", "ip", "awk", "wget", "httpd", "cut", "stty", "tty"}

// BusyboxImage builds an app image tree in dir from Debian's busybox-static.
func BusyboxImage(dir string) error {
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		return fmt.Errorf("busybox not found at %s: install Debian's busybox-static: %w", busybox, err)
	}
	for _, d := range []string{"bin", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		return err
	}
	for _, applet := range BusyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

// GoImage builds a static Go program into dir/bin/NAME.
func GoImage(dir, pkg, name string) error {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", name), pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w: %s", pkg, err, out)
	}
	return nil
}
