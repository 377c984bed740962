// Command poweroff is a trivial init for boot benchmarks: as PID 1 it calls
// reboot(2) to restart the machine at once. Booted with reboot=t under
// QEMU's -no-reboot, the restart ends QEMU, so the time QEMU ran is the cost
// of booting the kernel and starting one static program.
package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	// Outside a VM's or container's PID 1 this would restart the host.
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "poweroff: not PID 1; this program is meant only as the init of a benchmark VM")
		os.Exit(2)
	}
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	fmt.Fprintf(os.Stderr, "poweroff: reboot(LINUX_REBOOT_CMD_RESTART) failed: %v\n", err)
	// The benchmark VM has no /dev/console, so the message above is lost.
	// PID 1 exiting panics the kernel, which prints the exit status on the
	// serial console ("exitcode=0x0000NN00", NN being the errno in hex) before
	// panic=-1 ends the VM.
	var errno unix.Errno
	if errors.As(err, &errno) && errno > 0 && errno < 256 {
		os.Exit(int(errno))
	}
	os.Exit(1)
}
