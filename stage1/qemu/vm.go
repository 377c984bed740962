// Package qemu builds QEMU's command line for a pod's virtual machine and
// runs it through govmm.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	govmm "github.com/intel/govmm/qemu"
)

// Accelerator names as QEMU's -accel takes them.
const (
	KVM = "kvm"
	TCG = "tcg"
)

// Bundle is a QEMU copied into the stage1 image with its library closure,
// run through the bundled dynamic loader so that it works on any host.
type Bundle struct {
	// Dir contains ld.so, bin/qemu-system-x86_64, lib/, lib/qemu/ (modules)
	// and share/qemu/ (firmware).
	Dir string
}

// Loader returns the bundled dynamic loader, which is the program QEMU runs as.
func (b Bundle) Loader() string { return filepath.Join(b.Dir, "ld.so") }

// Binary returns the bundled qemu-system-x86_64.
func (b Bundle) Binary() string { return filepath.Join(b.Dir, "bin/qemu-system-x86_64") }

// LibDir returns the folder of the bundled libraries.
func (b Bundle) LibDir() string { return filepath.Join(b.Dir, "lib") }

// ModuleDir returns the folder of QEMU's loadable modules (TCG is one of them in Debian's build).
func (b Bundle) ModuleDir() string { return filepath.Join(b.Dir, "lib/qemu") }

// FirmwareDir returns the folder of the firmware QEMU loads.
func (b Bundle) FirmwareDir() string { return filepath.Join(b.Dir, "share/qemu") }

// Check reports a missing file of the bundle.
func (b Bundle) Check() error {
	for _, p := range []string{b.Loader(), b.Binary(), b.ModuleDir(), b.FirmwareDir()} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("QEMU bundle incomplete: %w", err)
		}
	}
	return nil
}

// VM describes one pod's virtual machine.
type VM struct {
	Name    string
	UUID    string
	Bundle  Bundle
	Accel   string
	Machine string
	// MemoryMiB is the guest's RAM.
	MemoryMiB int
	CPUs      int
	Kernel    string
	// KernelParams are joined with spaces into -append.
	KernelParams []string
	// PIDFile is the file QEMU writes its pid to, which gc reads after a crash.
	PIDFile string
	Devices []govmm.Device
	// Prepare, when set, runs on the thread that starts QEMU, just before.
	// It may change that thread's namespaces: the thread is never reused.
	Prepare func() error
	// Files are passed to QEMU as descriptors 3, 4 and so on, such as the
	// taps of TapNIC devices.
	Files []*os.File
}

// Args returns QEMU's arguments, after the binary. The device order is the
// order of Devices.
func (vm *VM) Args() ([]string, error) {
	if vm.Accel != KVM && vm.Accel != TCG {
		return nil, fmt.Errorf("invalid accelerator %q: use %q or %q", vm.Accel, KVM, TCG)
	}
	if vm.MemoryMiB < 32 {
		return nil, fmt.Errorf("guest memory of %d MiB is below the minimum of 32 MiB", vm.MemoryMiB)
	}
	if vm.CPUs < 1 {
		return nil, fmt.Errorf("invalid number of vCPUs %d", vm.CPUs)
	}
	for _, p := range vm.KernelParams {
		if strings.ContainsAny(p, " \n\x00") {
			return nil, fmt.Errorf("invalid kernel parameter %q: it must not contain spaces or newlines", p)
		}
	}

	accel := "kvm"
	cpu := "host"
	params := vm.KernelParams
	if vm.Accel == TCG {
		// A 32 MiB translation buffer keeps QEMU's RSS near 130 MiB instead of 160 at the same speed.
		accel = "tcg,tb-size=32"
		cpu = "max"
		// TCG's CPU is an AMD one without an invariant TSC, so a kernel
		// with several vCPUs distrusts the TSC and falls back to jiffies,
		// which tick every 4 ms. Every vCPU reads the same monotonic TSC
		// from QEMU, so it is reliable. A tsc= parameter of the user's
		// wins. The kernel passes what follows "--" to init, so the
		// parameter goes before it.
		if !slices.ContainsFunc(params, func(p string) bool { return strings.HasPrefix(p, "tsc=") }) {
			end := slices.Index(params, "--")
			if end < 0 {
				end = len(params)
			}
			params = slices.Insert(slices.Clone(params), end, "tsc=reliable")
		}
	}
	machine := vm.Machine
	if machine == "microvm" {
		// The second IOAPIC gives the virtio-mmio devices interrupt lines of
		// their own. Without it they share ISA lines 5 to 12, and the one on
		// line 8 collides with the RTC and fails to probe.
		machine = "microvm,ioapic2=on"
	}

	args := []string{
		"-name", vm.Name,
		"-uuid", vm.UUID,
		"-machine", machine,
		"-accel", accel,
		"-cpu", cpu,
		"-smp", fmt.Sprint(vm.CPUs),
		"-m", fmt.Sprintf("%dM", vm.MemoryMiB),
		"-nodefaults",
		"-no-user-config",
		"-display", "none",
		"-no-reboot",
		"-L", vm.Bundle.FirmwareDir(),
		"-kernel", vm.Kernel,
		"-append", strings.Join(params, " "),
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-device", "virtio-serial-device,id=vser0,max_ports=8",
	}
	if vm.PIDFile != "" {
		args = append(args, "-pidfile", vm.PIDFile)
	}
	config := &govmm.Config{}
	for i, d := range vm.Devices {
		if !d.Valid() {
			return nil, fmt.Errorf("invalid device %d: %+v", i, d)
		}
		args = append(args, d.QemuParams(config)...)
	}
	return args, nil
}

// Process is a running QEMU.
type Process struct {
	done chan struct{}
	err  error
	// prepareErr is the error of VM.Prepare; QEMU did not start.
	prepareErr error
	stderr     string
	cancel     context.CancelFunc
}

// Start launches QEMU through govmm and returns at once. Cancelling ctx or
// calling Kill sends QEMU SIGKILL. QEMU also gets SIGKILL when the calling
// process dies, so a killed supervisor leaves no VM running.
func (vm *VM) Start(ctx context.Context) (*Process, error) {
	args, err := vm.Args()
	if err != nil {
		return nil, err
	}
	if err := vm.Bundle.Check(); err != nil {
		return nil, err
	}
	// The bundled loader runs the bundled binary with the bundled libraries.
	argv := append([]string{"--library-path", vm.Bundle.LibDir(), vm.Bundle.Binary()}, args...)
	// QEMU reads the module folder from its environment; govmm passes ours on.
	if err := os.Setenv("QEMU_MODULE_DIR", vm.Bundle.ModuleDir()); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	p := &Process{done: make(chan struct{}), cancel: cancel}
	go func() {
		// Pdeathsig is tied to the thread that forked QEMU, so that thread
		// must live as long as QEMU does.
		// The thread is never unlocked, so Go discards it with the
		// namespaces Prepare may have given it when the goroutine ends.
		runtime.LockOSThread()
		if vm.Prepare != nil {
			if err := vm.Prepare(); err != nil {
				p.prepareErr = err
				close(p.done)
				return
			}
		}
		// A process group of its own keeps a terminal's Ctrl-C away from
		// QEMU, so that the supervisor can stop the apps gracefully.
		attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		p.stderr, p.err = govmm.LaunchCustomQemu(ctx, vm.Bundle.Loader(), argv, vm.Files, attr, nil)
		close(p.done)
	}()
	return p, nil
}

// Done is closed when QEMU has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Kill ends QEMU at once.
func (p *Process) Kill() { p.cancel() }

// Wait waits for QEMU to exit and returns its error with what it wrote on stderr.
func (p *Process) Wait() error {
	<-p.done
	p.cancel()
	if p.prepareErr != nil {
		return p.prepareErr
	}
	if p.err != nil {
		msg := strings.TrimSpace(p.stderr)
		var exitErr interface{ ExitCode() int }
		if msg != "" && errors.As(p.err, &exitErr) {
			return fmt.Errorf("QEMU failed: %w: %s", p.err, msg)
		}
		return fmt.Errorf("QEMU failed: %w", p.err)
	}
	return nil
}
