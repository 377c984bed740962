package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	govmm "github.com/intel/govmm/qemu"

	"github.com/stage1-vm/stage1-vm/stage1/qemu"
	"github.com/stage1-vm/stage1-vm/stage1/run"
	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

const (
	poweroffPackage = "github.com/stage1-vm/stage1-vm/tests/testapps/poweroff"
	floorRootTag    = "root"
	// floorTimeout bounds one floor boot, which normally ends in seconds.
	floorTimeout = 60 * time.Second
)

// floor boots the image's kernel with the image's QEMU and a read-only 9p
// root that contains only the poweroff init. The kernel has no initramfs
// support (CONFIG_BLK_DEV_INITRD is off), and the product boots from a 9p
// root too.
type floor struct {
	bundle  qemu.Bundle
	argv    []string
	console string
}

// floorRun is one measured floor boot.
type floorRun struct {
	// Elapsed is from starting QEMU to its exit.
	Elapsed time.Duration
	// PeakKiB is QEMU's maximum RSS as wait4 reports it.
	PeakKiB uint64
	// PolledPeakKiB is the last VmHWM read every pollInterval, the method
	// used for the pods' QEMU, which is not a child of this process.
	PolledPeakKiB uint64
}

// newFloor builds the poweroff init into dir/root and the QEMU command
// line. The machine options, accelerator and memory come from the product's
// qemu.VM.Args. The kernel parameters are the product's without --debug,
// except for init, root and systemd.machine_id.
func newFloor(dir string, bundle qemu.Bundle, kernel string, tscKHz uint64) (*floor, error) {
	root := filepath.Join(dir, "root")
	if err := stage0.GoImage(root, poweroffPackage, "poweroff"); err != nil {
		return nil, err
	}

	params := []string{
		"console=ttyS0",
		"root=" + floorRootTag,
		"rootfstype=9p",
		"rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose",
		"ro",
		"init=/bin/poweroff",
		"reboot=t",
		"panic=-1",
	}
	if tscKHz > 0 {
		params = append(params, fmt.Sprintf("tsc_early_khz=%d", tscKHz))
	}
	params = append(params, "quiet", "loglevel=3")

	// The floor gets the VM of a pod without limits, as the hello pod does.
	memMiB, cpus := run.UnlimitedVMSize(runtime.NumCPU())
	vm := &qemu.VM{
		Name:         "stage1-vm-bench-floor",
		UUID:         stage0.NewUUID(),
		Bundle:       bundle,
		Accel:        qemu.TCG,
		Machine:      "microvm",
		MemoryMiB:    memMiB,
		CPUs:         cpus,
		Kernel:       kernel,
		KernelParams: params,
		Devices:      []govmm.Device{qemu.Share{Tag: floorRootTag, Path: root, ReadOnly: true}},
	}
	args, err := vm.Args()
	if err != nil {
		return nil, err
	}

	// The console goes to a file, so that a failed boot can be explained.
	console := filepath.Join(dir, "console.log")
	args = append(args, "-chardev", "file,id=console,path="+console, "-serial", "chardev:console")
	argv := append([]string{"--library-path", bundle.LibDir(), bundle.Binary()}, args...)
	return &floor{bundle: bundle, argv: argv, console: console}, nil
}

// run boots the floor VM once and waits for QEMU to exit.
func (f *floor) run(ctx context.Context) (floorRun, error) {
	ctx, cancel := context.WithTimeout(ctx, floorTimeout)
	defer cancel()
	// Pdeathsig is tied to the thread that forked QEMU, so that thread must
	// live until QEMU exits.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	cmd := exec.CommandContext(ctx, f.bundle.Loader(), f.argv...)
	cmd.Env = append(os.Environ(), "QEMU_MODULE_DIR="+f.bundle.ModuleDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return floorRun{}, fmt.Errorf("start QEMU: %w", err)
	}
	stopPolling := pollVmHWM(cmd.Process.Pid)
	err := cmd.Wait()
	elapsed := time.Since(start)
	polled := stopPolling()

	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return floorRun{}, fmt.Errorf("floor VM did not exit within %s%s", floorTimeout, f.consoleTail())
	case ctx.Err() != nil:
		return floorRun{}, ctx.Err()
	case err != nil:
		return floorRun{}, fmt.Errorf("QEMU failed: %w: %s%s", err, strings.TrimSpace(output.String()), f.consoleTail())
	}
	// A failed reboot makes the init exit, which panics the kernel, and
	// panic=-1 ends QEMU as a reboot would.
	console, _ := os.ReadFile(f.console)
	if bytes.Contains(console, []byte("Kernel panic")) {
		return floorRun{}, fmt.Errorf("the floor VM's kernel panicked%s", f.consoleTail())
	}
	usage, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return floorRun{}, errors.New("wait4 returned no resource usage for QEMU")
	}
	// Linux reports ru_maxrss in KiB.
	return floorRun{Elapsed: elapsed, PeakKiB: uint64(usage.Maxrss), PolledPeakKiB: polled}, nil
}

// consoleTail returns the end of the floor VM's console as a suffix for an
// error message.
func (f *floor) consoleTail() string {
	data, err := os.ReadFile(f.console)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return "; the guest console was empty"
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "; last guest console lines:\n" + strings.Join(lines, "\n")
}

// pollVmHWM reads the VmHWM of pid every pollInterval until the process
// exits or the returned function is called, which returns the last value.
func pollVmHWM(pid int) func() uint64 {
	stop := make(chan struct{})
	result := make(chan uint64, 1)
	go func() {
		var peak uint64
		ticker := time.NewTicker(pollInterval)
		defer ticker.Stop()
		for {
			hwm, err := readVmHWM(pid)
			if err != nil {
				break
			}
			peak = max(peak, hwm)
			select {
			case <-stop:
				result <- peak
				return
			case <-ticker.C:
			}
		}
		result <- peak
	}()
	return func() uint64 {
		close(stop)
		return <-result
	}
}

// qemuVersion returns the first line of the bundled QEMU's -version output.
func qemuVersion(bundle qemu.Bundle) (string, error) {
	cmd := exec.Command(bundle.Loader(), "--library-path", bundle.LibDir(), bundle.Binary(), "-version")
	cmd.Env = append(os.Environ(), "QEMU_MODULE_DIR="+bundle.ModuleDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -version: %w: %s", bundle.Binary(), err, out)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first), nil
}
