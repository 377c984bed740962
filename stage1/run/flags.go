// Package run is the run entrypoint: it prepares the pod's guest
// configuration, boots the VM, relays its output and returns the pod's exit
// status.
package run

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/stage1/network"
	"github.com/stage1-vm/stage1-vm/stage1/qemu"
)

// Flags are the run entrypoint's arguments in stage1 interface version 6,
// as rkt 1.30.0 passes them.
type Flags struct {
	Debug                          bool
	Net                            string
	Interactive                    bool
	PrivateUsers                   string
	MDSToken                       string
	LocalConfig                    string
	Hostname                       string
	DNSConfMode                    string
	DisableCapabilitiesRestriction bool
	DisablePaths                   bool
	DisableSeccomp                 bool
	Mutable                        bool
	IPC                            string
	UUID                           string
}

// ParseFlags parses the run entrypoint's arguments, without argv[0].
func ParseFlags(args []string) (*Flags, error) {
	f := &Flags{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&f.Debug, "debug", false, "show the kernel and systemd boot and debug logs")
	fs.StringVar(&f.Net, "net", "default", "networks of the pod")
	fs.BoolVar(&f.Interactive, "interactive", false, "pass stdin to the app")
	fs.StringVar(&f.PrivateUsers, "private-users", "", "user namespace uid shift U:N")
	fs.StringVar(&f.MDSToken, "mds-token", "", "metadata service token")
	fs.StringVar(&f.LocalConfig, "local-config", "", "rkt's local configuration folder")
	fs.StringVar(&f.Hostname, "hostname", "", "pod hostname (default rkt-<uuid>)")
	fs.StringVar(&f.DNSConfMode, "dns-conf-mode", "", "resolv=X,hosts=Y")
	fs.BoolVar(&f.DisableCapabilitiesRestriction, "disable-capabilities-restriction", false, "keep all capabilities")
	fs.BoolVar(&f.DisablePaths, "disable-paths", false, "do not restrict /proc and /sys")
	fs.BoolVar(&f.DisableSeccomp, "disable-seccomp", false, "do not filter system calls")
	fs.BoolVar(&f.Mutable, "mutable", false, "the pod accepts rkt app commands")
	fs.StringVar(&f.IPC, "ipc", "", "IPC namespace mode")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("invalid arguments %q: %w", strings.Join(args, " "), err)
	}
	if fs.NArg() != 1 {
		return nil, fmt.Errorf("expected one pod UUID after the flags, got %d arguments: %q", fs.NArg(), fs.Args())
	}
	uuid, err := types.NewUUID(fs.Arg(0))
	if err != nil {
		return nil, fmt.Errorf("invalid pod UUID %q: %w", fs.Arg(0), err)
	}
	f.UUID = uuid.String()
	if f.Hostname == "" {
		f.Hostname = "rkt-" + f.UUID
	}
	return f, nil
}

// CheckSupported rejects the flags whose behavior is not built yet, so that
// a pod never runs with a setting silently dropped.
func (f *Flags) CheckSupported() error {
	if _, err := network.ParseSpec(f.Net); err != nil {
		return err
	}
	if f.PrivateUsers != "" {
		return fmt.Errorf("--private-users=%s is not supported yet", f.PrivateUsers)
	}
	switch f.IPC {
	case "", "auto", "private":
	case "parent":
		return errors.New("--ipc=parent: a pod VM cannot share the host's IPC namespace; use --ipc=auto or private")
	default:
		return fmt.Errorf("invalid --ipc=%s: use auto, private or parent", f.IPC)
	}
	return nil
}

// Environment variables that configure the VM. rkt passes its own
// environment on to the run entrypoint.
const (
	EnvAccel             = "STAGE1_VM_ACCEL"
	EnvBootTimeout       = "STAGE1_VM_BOOT_TIMEOUT"
	EnvStopTimeout       = "STAGE1_VM_STOP_TIMEOUT"
	EnvExtraKernelParams = "RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS"
)

// DefaultBootTimeout is how long the guest may take to reach user space.
// Under TCG on a loaded 2-core host a boot takes about 1 to 3 s.
const DefaultBootTimeout = 30 * time.Second

// DefaultStopTimeout is the grace period of a graceful stop: how long each
// app may take to exit after SIGTERM before it gets SIGKILL.
const DefaultStopTimeout = 10 * time.Second

// kvmProbeTimeout bounds the first boot attempt under KVM in auto mode: a
// KVM guest reaches user space in well under a second, so a guest silent for
// this long is stuck, and the pod is booted again under TCG.
const kvmProbeTimeout = 10 * time.Second

// reservedKernelParams are the guest kernel parameters that the pod needs
// as stage1-vm sets them: another value would boot a guest that cannot run
// the pod or report its end.
var reservedKernelParams = []string{"root", "rootfstype", "rootflags", "init", "console", "panic", "reboot", "systemd.unit", "systemd.machine_id"}

// VMSettings are the settings read from the environment.
type VMSettings struct {
	// Accel is "auto", "kvm" or "tcg".
	Accel       string
	BootTimeout time.Duration
	// StopTimeout is the grace period between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	ExtraParams []string
}

// ReadVMSettings reads and checks the environment variables.
func ReadVMSettings(getenv func(string) string) (VMSettings, error) {
	s := VMSettings{Accel: "auto", BootTimeout: DefaultBootTimeout, StopTimeout: DefaultStopTimeout}
	if v := getenv(EnvAccel); v != "" {
		if v != "auto" && v != qemu.KVM && v != qemu.TCG {
			return s, fmt.Errorf("invalid %s=%q: use auto, kvm or tcg", EnvAccel, v)
		}
		s.Accel = v
	}
	if v := getenv(EnvBootTimeout); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3600 {
			return s, fmt.Errorf("invalid %s=%q: use a whole number of seconds from 1 to 3600", EnvBootTimeout, v)
		}
		s.BootTimeout = time.Duration(n) * time.Second
	}
	if v := getenv(EnvStopTimeout); v != "" {
		// systemd reads a TimeoutStopSec of 0 as no limit, so 0 is invalid.
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3600 {
			return s, fmt.Errorf("invalid %s=%q: use a whole number of seconds from 1 to 3600", EnvStopTimeout, v)
		}
		s.StopTimeout = time.Duration(n) * time.Second
	}
	s.ExtraParams = strings.Fields(getenv(EnvExtraKernelParams))
	for _, param := range s.ExtraParams {
		name, _, _ := strings.Cut(param, "=")
		for _, reserved := range reservedKernelParams {
			if name == reserved {
				return s, fmt.Errorf("invalid %s: %q overrides a parameter that stage1-vm sets itself (%s)", EnvExtraKernelParams, param, strings.Join(reservedKernelParams, ", "))
			}
		}
	}
	return s, nil
}

// lockFD returns the pod lock that rkt passes in RKT_LOCK_FD, marked
// close-on-exec so that only this process holds it.
func lockFD() (*os.File, error) {
	v := os.Getenv("RKT_LOCK_FD")
	if v == "" {
		return nil, errors.New("RKT_LOCK_FD is not set; the run entrypoint must be started by rkt or a stage0 that passes the pod lock")
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("invalid RKT_LOCK_FD=%q: expected a file descriptor number", v)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("RKT_LOCK_FD=%d is not an open file descriptor: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "pod-lock"), nil
}
