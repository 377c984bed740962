package qemu

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// KVMUsable reports whether /dev/kvm can be opened and responds to
// KVM_GET_API_VERSION. A usable device does not prove that guests run: on
// hosts without working nested virtualization they hang after the BIOS,
// which only the boot watchdog catches.
func KVMUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xAE00
	version, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_GET_API_VERSION on /dev/kvm: %w", errno)
	}
	if version != 12 {
		return fmt.Errorf("/dev/kvm has API version %d, expected 12", version)
	}
	return nil
}
