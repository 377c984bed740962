// Package ports finds the guest's virtio-serial ports by name and holds the
// paths of the agent's local sockets.
package ports

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// Local sockets of the agent, in guest RAM.
var (
	// IOSocket receives the apps' stdout and stderr streams.
	IOSocket = filepath.Join(guestconfig.GuestRunDir, "io.sock")
	// ControlSocket receives "ready" and "exited <app> <status>" from the units.
	ControlSocket = filepath.Join(guestconfig.GuestRunDir, "control.sock")
)

// Path returns the device node of the virtio-serial port with the given
// name, found through /sys/class/virtio-ports.
func Path(name string) (string, error) {
	entries, err := os.ReadDir("/sys/class/virtio-ports")
	if err != nil {
		return "", fmt.Errorf("list virtio ports: %w", err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(data)) == name {
			return filepath.Join("/dev", e.Name()), nil
		}
	}
	return "", fmt.Errorf("virtio port %q not found", name)
}

// Open opens the named port.
func Open(name string, flag int) (*os.File, error) {
	path, err := Path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open virtio port %q: %w", name, err)
	}
	return f, nil
}
