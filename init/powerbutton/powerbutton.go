// Package powerbutton is a guest service that turns a press of the ACPI
// power button into a reboot of the guest, which stops the apps gracefully
// and then ends QEMU. The host presses the button through QMP when the
// guest agent does not take a stop request. The service is separate from
// the agent, so that it still works when the agent hangs.
package powerbutton

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Input event constants from linux/input-event-codes.h.
const (
	evKey    = 1
	keyPower = 116
)

// eventSize is the size of struct input_event on 64-bit Linux: a 16-byte
// timeval, then type and code (uint16 each) and value (int32).
const eventSize = 24

// sigRebootSystemd is SIGRTMIN+5, on which systemd starts reboot.target.
// systemd counts from glibc's SIGRTMIN, which is 34 on Linux.
const sigRebootSystemd = unix.Signal(34 + 5)

// Run watches every input device for a power button press and sends
// systemd its reboot signal on each. It returns when no device can be read.
func Run(log *slog.Logger) error {
	devices, err := filepath.Glob("/dev/input/event*")
	if err != nil {
		return err
	}
	if len(devices) == 0 {
		return errors.New("no input device in /dev/input: the kernel has no ACPI power button")
	}
	errs := make(chan error, len(devices))
	for _, path := range devices {
		go func() { errs <- watch(path, log) }()
	}
	var all []error
	for range devices {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func watch(path string, log *slog.Logger) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open input device %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, eventSize)
	for {
		if _, err := io.ReadFull(f, buf); err != nil {
			return fmt.Errorf("read input device %s: %w", path, err)
		}
		typ := binary.LittleEndian.Uint16(buf[16:18])
		code := binary.LittleEndian.Uint16(buf[18:20])
		value := int32(binary.LittleEndian.Uint32(buf[20:24]))
		if typ == evKey && code == keyPower && value == 1 {
			log.Info("power button pressed; rebooting, which stops the apps", "device", path)
			if err := unix.Kill(1, sigRebootSystemd); err != nil {
				log.Error("ask systemd to reboot failed", "error", err)
			}
		}
	}
}
