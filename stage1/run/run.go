package run

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-multierror"
	govmm "github.com/intel/govmm/qemu"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
	"github.com/stage1-vm/stage1-vm/stage1/qemu"
	"github.com/stage1-vm/stage1-vm/stage1/units"
	"github.com/stage1-vm/stage1-vm/stage1/volume"
)

// Paths inside the stage1 image, relative to the pod directory.
const (
	HostDir      = "stage1/rootfs/stage1-vm/host"
	GuestRootDir = "stage1/rootfs/stage1-vm/guest"
	QEMUDir      = HostDir + "/qemu"
	KernelFile   = HostDir + "/kernel/bzImage"
)

// ErrorExitStatus is the exit status of the run entrypoint when stage1-vm
// itself fails rather than an app. rkt 1.30.0 exits with 254 on its own
// errors too.
const ErrorExitStatus = 254

// ForcedStopExitStatus is the run entrypoint's exit status after stop
// --force: 128 plus SIGKILL, as if the pod had been killed.
const ForcedStopExitStatus = 137

// stopMargin is added to the apps' grace period to give the guest's stop
// request time for the rest of the shutdown: the apps' exit reports, the
// agent's stop and the sync of the shares. When it has passed as well,
// QEMU is killed.
const stopMargin = 10 * time.Second

// stopAckTimeout is how long the guest agent may take to acknowledge a stop
// request before the run entrypoint presses the guest's ACPI power button
// instead. A stop during the boot counts from the request, so the agent
// must also start within this time.
const stopAckTimeout = 5 * time.Second

// Main runs the pod and returns the process exit status.
func Main(args []string) int {
	flags, err := ParseFlags(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: %v\n", err)
		return ErrorExitStatus
	}
	sigs := stopSignals()
	// A write to a closed stdout then fails with EPIPE instead of killing
	// the process with SIGPIPE, which would take the VM down with it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	level := slog.LevelWarn
	if flags.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("pod", flags.UUID)

	status, err := runPod(flags, log, sigs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: %v\n", err)
		return ErrorExitStatus
	}
	return status
}

// cleanups runs registered functions in reverse order and collects errors.
type cleanups []func() error

func (c *cleanups) add(f func() error) { *c = append(*c, f) }

func (c cleanups) run() error {
	var result *multierror.Error
	for i := len(c) - 1; i >= 0; i-- {
		if err := c[i](); err != nil {
			result = multierror.Append(result, err)
		}
	}
	return result.ErrorOrNil()
}

func runPod(flags *Flags, log *slog.Logger, sigs <-chan os.Signal) (status int, err error) {
	var undo cleanups
	defer func() {
		if cerr := undo.run(); cerr != nil {
			log.Error("cleanup failed", "error", cerr)
			if err == nil {
				err = fmt.Errorf("clean up pod %s: %w", flags.UUID, cerr)
			}
		}
	}()

	// Step 1: check the arguments, the environment and the pod lock.
	if err := flags.CheckSupported(); err != nil {
		return 0, err
	}
	settings, err := ReadVMSettings(os.Getenv)
	if err != nil {
		return 0, err
	}
	lock, err := lockFD()
	if err != nil {
		return 0, err
	}
	// The pod counts as running for rkt while this process holds the lock.
	defer lock.Close()
	podDir, err := os.Getwd()
	if err != nil {
		return 0, err
	}

	// Step 2: load the pod manifest and build the guest configuration.
	manifest, err := pod.LoadManifest(podDir)
	if err != nil {
		return 0, err
	}
	mutable := flags.Mutable || pod.IsMutable(manifest)
	if len(manifest.Apps) == 0 && !mutable {
		return 0, errors.New("the pod manifest has no apps")
	}
	if flags.Interactive && mutable {
		return 0, errors.New("--interactive needs a pod of one app, and a mutable pod (rkt app sandbox) has none at start")
	}
	if flags.Interactive && len(manifest.Apps) != 1 {
		return 0, fmt.Errorf("--interactive needs a pod of one app; this one has %d", len(manifest.Apps))
	}
	dns, err := pod.ParseDNSConfMode(flags.DNSConfMode)
	if err != nil {
		return 0, err
	}
	opts := pod.Options{
		UUID:                flags.UUID,
		Hostname:            flags.Hostname,
		Debug:               flags.Debug,
		DisableCapabilities: flags.DisableCapabilitiesRestriction,
		DNS:                 dns,
		DisablePaths:        flags.DisablePaths,
		DisableSeccomp:      flags.DisableSeccomp,
	}
	cfg, vols, err := pod.GuestConfig(podDir, manifest, opts)
	if err != nil {
		return 0, err
	}
	cfg.StopTimeoutSeconds = int(settings.StopTimeout / time.Second)
	cfg.Mutable = mutable
	if mutable {
		// Apps added later may mount volumes.
		cfg.Volumes = true
	}
	if flags.Interactive {
		cfg.Apps[0].Stdin = true
	}

	if !vols.HostsFromConfig() {
		for _, app := range cfg.Apps {
			if err := pod.WriteHosts(podDir, app.Name, cfg.Hostname); err != nil {
				return 0, err
			}
		}
	}

	hostMemory, hostCPUs, err := hostResources()
	if err != nil {
		return 0, fmt.Errorf("read the host's memory and CPUs: %w", err)
	}
	memMiB, cpus, err := vmSize(cfg, hostMemory, hostCPUs)
	if err != nil {
		return 0, err
	}
	if mutable {
		memMiB, cpus = mutableVMSize(memMiB, hostMemory, hostCPUs)
	}

	// Step 3: attach the networks. Nothing is created before every input
	// is checked.
	nets, err := attachNetworks(podDir, manifest, cfg, flags, log, &undo)
	if err != nil {
		return 0, err
	}
	// What shaped the apps' configuration, kept for apps added later.
	state := pod.RunState{Options: opts, StopTimeoutSeconds: cfg.StopTimeoutSeconds, MemoryMiB: memMiB}
	if dns.Resolv == "default" && len(nets.dns.Nameservers) > 0 {
		state.ResolvConf = resolvConf(nets.dns)
		vols.UseResolvConf(cfg, state.ResolvConf)
	}
	if flags.MDSToken != "" {
		url, err := metadataURL(flags.MDSToken, nets)
		if err != nil {
			return 0, err
		}
		state.MetadataURL = url
	}
	for i := range cfg.Apps {
		state.Complete(&cfg.Apps[i])
	}

	// Step 4: write the config share.
	runtimeDir := filepath.Join(podDir, pod.RuntimeDir)
	if err := os.RemoveAll(runtimeDir); err != nil {
		return 0, err
	}
	configDir := filepath.Join(runtimeDir, "config")
	if err := os.MkdirAll(configDir, 0o700); err != nil {
		return 0, fmt.Errorf("create %s: %w", configDir, err)
	}
	undo.add(func() error { return os.RemoveAll(runtimeDir) })
	if err := guestconfig.Write(configDir, cfg); err != nil {
		return 0, err
	}
	if err := units.Write(filepath.Join(configDir, guestconfig.UnitsDir), cfg); err != nil {
		return 0, err
	}
	if err := vols.Prepare(cfg); err != nil {
		return 0, err
	}
	apps := pod.AppsShare(podDir, cfg)
	if err := apps.Prepare(); err != nil {
		return 0, err
	}
	shares := []*volume.Share{apps}
	if share := vols.Share(); share != nil {
		shares = append(shares, share)
	} else if mutable {
		share := &volume.Share{Dir: filepath.Join(podDir, pod.VolumeShareDir)}
		if err := share.Prepare(); err != nil {
			return 0, err
		}
		shares = append(shares, share)
	}
	if mutable {
		if err := state.Save(podDir); err != nil {
			return 0, err
		}
	}
	if _, err := makeJournalDir(podDir, cfg.UUID); err != nil {
		return 0, err
	}

	// Step 5: write the pid file; rkt reads it for status and enter.
	if err := pod.WritePID(podDir, os.Getpid()); err != nil {
		return 0, err
	}

	// Step 6: boot the VM and supervise it until it exits.
	// microvm guests under TCG hung in 5 to 8% of boots while calibrating
	// the TSC; with tsc_early_khz none of 64 boots hung.
	tscKHz, err := qemu.HostTSCkHz()
	if err != nil {
		log.Warn("measuring the host TSC failed; the guest calibrates it, which can hang its boot", "error", err)
	}
	vm := newVM(podDir, cfg, flags, settings, tscKHz)
	vm.MemoryMiB, vm.CPUs = memMiB, cpus
	vm.Devices = append(vm.Devices, qemu.Share{Tag: guestconfig.AppsTag, Path: apps.Dir})
	if len(shares) > 1 {
		vm.Devices = append(vm.Devices, qemu.Share{Tag: guestconfig.VolumesTag, Path: shares[1].Dir})
	}
	vm.Prepare = func() error { return volume.MountInNewNamespace(shares...) }
	vm.Devices = append(vm.Devices, nets.devices...)
	vm.Files = nets.files
	sup := &supervisor{podDir: podDir, pod: cfg, log: log, debug: flags.Debug, signals: sigs, stopTimeout: settings.StopTimeout + stopMargin}
	return sup.boot(vm, settings)
}

// newVM describes the VM of a pod, with the accelerator still unset.
func newVM(podDir string, cfg *guestconfig.Pod, flags *Flags, settings VMSettings, tscKHz uint64) *qemu.VM {
	machineID := guestconfig.MachineID(cfg.UUID)
	params := []string{
		"console=ttyS0",
		"root=" + guestconfig.SystemTag,
		"rootfstype=9p",
		"rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose",
		"ro",
		"init=" + guestconfig.GuestInit,
		// The pod ends with a reboot by triple fault, which ends QEMU
		// because it runs with -no-reboot.
		"reboot=t",
		"panic=-1",
		"systemd.machine_id=" + machineID,
		// systemd and the guest's units log to /dev/kmsg until journald
		// runs. The kernel's default rate limit would drop most of it
		// before it reaches the journal.
		"printk.devkmsg=on",
	}
	if tscKHz > 0 {
		params = append(params, fmt.Sprintf("tsc_early_khz=%d", tscKHz))
	}
	if !flags.Debug {
		params = append(params, "quiet", "loglevel=3")
	}
	params = append(params, settings.ExtraParams...)

	rel := func(p string) string { return filepath.Join(podDir, p) }
	devices := []govmm.Device{
		qemu.Console{Socket: consoleSocket},
		qemu.SerialPort{ID: "status", Name: guestconfig.StatusPort, Socket: statusSocket},
		qemu.SerialPort{ID: "stdout", Name: guestconfig.StdoutPort, Socket: stdoutSocket},
		qemu.SerialPort{ID: "stderr", Name: guestconfig.StderrPort, Socket: stderrSocket},
		qemu.SerialPort{ID: "agent", Name: guestconfig.AgentPort, Socket: agentSocket},
		qemu.QMPSocket{Path: qmpSocket},
		qemu.Share{Tag: guestconfig.SystemTag, Path: rel(GuestRootDir), ReadOnly: true},
		qemu.Share{Tag: guestconfig.ConfigTag, Path: rel(filepath.Join(pod.RuntimeDir, "config")), ReadOnly: true},
		// The guest journal's own folder, which makeJournalDir created.
		qemu.Share{Tag: guestconfig.JournalTag, Path: rel(JournalDir(cfg.UUID))},
	}
	if hasStdin(cfg) {
		devices = append(devices, qemu.SerialPort{ID: "stdin", Name: guestconfig.StdinPort, Socket: stdinSocket})
	}
	devices = append(devices, govmm.RngDevice{ID: "rng0", Filename: "/dev/urandom", Transport: govmm.TransportMMIO})

	return &qemu.VM{
		Name:         "rkt-" + cfg.UUID,
		UUID:         cfg.UUID,
		Bundle:       qemu.Bundle{Dir: rel(QEMUDir)},
		Machine:      "microvm",
		MemoryMiB:    GuestMemoryMiB,
		CPUs:         1,
		Kernel:       rel(KernelFile),
		KernelParams: params,
		PIDFile:      rel(filepath.Join(pod.RuntimeDir, "qemu.pid")),
		Devices:      devices,
	}
}

// Sockets of the guest's ports, relative to the pod directory, which is the
// working directory of both this process and QEMU. Relative paths keep them
// under the 108-byte limit of unix socket paths whatever the pod directory.
var (
	consoleSocket = filepath.Join(pod.RuntimeDir, "console.sock")
	statusSocket  = filepath.Join(pod.RuntimeDir, "status.sock")
	stdoutSocket  = filepath.Join(pod.RuntimeDir, "stdout.sock")
	stderrSocket  = filepath.Join(pod.RuntimeDir, "stderr.sock")
	stdinSocket   = filepath.Join(pod.RuntimeDir, "stdin.sock")
	agentSocket   = filepath.Join(pod.RuntimeDir, "agent.sock")
	// qmpSocket is QEMU's QMP monitor, which QEMU listens on.
	qmpSocket = filepath.Join(pod.RuntimeDir, "qmp.sock")
	// EnterSocket is where the enter entrypoint connects; the run
	// entrypoint listens on it, not QEMU.
	EnterSocket = filepath.Join(pod.RuntimeDir, "enter.sock")
)

// stopSignals registers the signals that stop the pod: SIGTERM from the
// stop entrypoint, SIGINT from a terminal, SIGHUP, and SIGUSR1 from
// stop --force. They are registered before anything else, so a stop that
// arrives while the VM boots waits in the channel.
func stopSignals() <-chan os.Signal {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	return ch
}

// hasStdin reports whether the pod's app reads rkt run's stdin
// (--interactive, one app only).
func hasStdin(cfg *guestconfig.Pod) bool {
	return len(cfg.Apps) > 0 && cfg.Apps[0].Stdin
}
