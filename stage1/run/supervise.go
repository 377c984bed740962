package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/report"
	"github.com/stage1-vm/stage1-vm/stage1/enterproxy"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
	"github.com/stage1-vm/stage1-vm/stage1/qemu"
)

// consoleTailSize is how much of the guest console is kept to explain a
// failed boot.
const consoleTailSize = 8 * 1024

// errNoSignOfLife is returned when the boot watchdog fires.
var errNoSignOfLife = errors.New("no sign of life from the guest")

// supervisor runs one pod's VM: it relays the ports, enforces the boot
// watchdog and records what the guest reports.
type supervisor struct {
	podDir string
	pod    *guestconfig.Pod
	log    *slog.Logger
	debug  bool
	// signals receives the signals that stop the pod, registered at start.
	signals <-chan os.Signal
	// stopTimeout is how long a graceful stop may take before QEMU is killed.
	stopTimeout time.Duration
}

// boot starts the VM with the configured accelerator and, in auto mode,
// boots again under TCG when a KVM guest shows no sign of life.
func (s *supervisor) boot(vm *qemu.VM, settings VMSettings) (int, error) {
	accel := settings.Accel
	if accel == qemu.KVM {
		if err := qemu.KVMUsable(); err != nil {
			return 0, fmt.Errorf("%s=kvm, but KVM is not usable: %w; set %s=auto or tcg to run without it", EnvAccel, err, EnvAccel)
		}
	}
	if accel == "auto" {
		if err := qemu.KVMUsable(); err != nil {
			s.log.Warn("KVM is not usable, running the VM under TCG (software emulation), which is many times slower", "reason", err)
			accel = qemu.TCG
		} else {
			vm.Accel = qemu.KVM
			timeout := min(settings.BootTimeout, kvmProbeTimeout)
			status, err := s.attempt(vm, timeout)
			if !errors.Is(err, errNoSignOfLife) {
				return status, err
			}
			s.log.Warn("the guest showed no sign of life under KVM; booting it again under TCG. Set STAGE1_VM_ACCEL=tcg to skip KVM on this host", "timeout", timeout)
			accel = qemu.TCG
		}
	}
	vm.Accel = accel
	status, err := s.attempt(vm, settings.BootTimeout)
	if errors.Is(err, errNoSignOfLife) {
		if vm.Accel == qemu.KVM {
			return 0, fmt.Errorf("the guest showed no sign of life within %s under KVM; this happens when the host's virtualization does not work (nested virtualization, for example): set %s=tcg to run without KVM: %w",
				settings.BootTimeout, EnvAccel, err)
		}
		return 0, fmt.Errorf("the guest showed no sign of life within %s under TCG: raise %s on a slow or loaded host, and run with --debug to see the boot: %w",
			settings.BootTimeout, EnvBootTimeout, err)
	}
	return status, err
}

// attempt boots the VM once and supervises it until QEMU exits.
func (s *supervisor) attempt(vm *qemu.VM, bootTimeout time.Duration) (int, error) {
	if s.debug {
		if args, err := vm.Args(); err == nil {
			s.log.Debug("starting VM", "accelerator", vm.Accel, "bootTimeout", bootTimeout, "qemuArgs", strings.Join(args, " "))
		}
	}
	names := []string{consoleSocket, statusSocket, stdoutSocket, stderrSocket, agentSocket}
	stdin := hasStdin(s.pod)
	if stdin {
		names = append(names, stdinSocket)
	}
	listeners := map[string]net.Listener{}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, name := range names {
		_ = os.Remove(name)
		l, err := net.Listen("unix", name)
		if err != nil {
			return 0, fmt.Errorf("listen on %s: %w", name, err)
		}
		listeners[name] = l
	}

	start := time.Now()
	proc, err := vm.Start(context.Background())
	if err != nil {
		return 0, fmt.Errorf("start QEMU for pod %s: %w", s.pod.UUID, err)
	}
	// From here on QEMU runs: every return path kills it and waits.
	defer func() {
		proc.Kill()
		_ = proc.Wait()
	}()

	conns, err := acceptAll(listeners, names, proc.Done())
	if err != nil {
		return 0, fmt.Errorf("connect to QEMU's ports: %w (QEMU: %v)", err, proc.Wait())
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	console := newTail(consoleTailSize)
	var relays sync.WaitGroup
	relay := func(dst io.Writer, src net.Conn) {
		relays.Add(1)
		go func() {
			defer relays.Done()
			_, _ = io.Copy(dst, src)
		}()
	}
	var consoleOut io.Writer = console
	if s.debug {
		consoleOut = io.MultiWriter(console, os.Stderr)
	}
	relay(consoleOut, conns[consoleSocket])
	relay(&drainOnError{w: os.Stdout}, conns[stdoutSocket])
	relay(&drainOnError{w: os.Stderr}, conns[stderrSocket])
	if stdin {
		// Not waited for: a read of a terminal blocks until the user types.
		// At the end of stdin only the write side closes: QEMU reads what
		// the guest has not taken yet, then ends the app's input. A full
		// close would make QEMU drop the unread data.
		go func(conn *net.UnixConn) {
			_, _ = io.Copy(conn, os.Stdin)
			_ = conn.CloseWrite()
		}(conns[stdinSocket].(*net.UnixConn))
	}

	reports := make(chan report.Message, 16)
	go readReports(conns[statusSocket], reports, s.log)

	sessions, err := enterproxy.Listen(EnterSocket, conns[agentSocket], s.log)
	if err != nil {
		return 0, err
	}
	// Runs before the connections close, so that open enter sessions end
	// with an error frame that reports the pod's stop.
	defer sessions.Close()

	st := &attemptState{sup: s, proc: proc, status: conns[statusSocket], sessions: sessions, start: start, podStatus: -1}
	defer func() {
		if st.powerDownCancel != nil {
			st.powerDownCancel()
		}
	}()
	watchdog := time.NewTimer(bootTimeout)
	defer watchdog.Stop()
loop:
	for {
		select {
		case m, ok := <-reports:
			if !ok {
				reports = nil
				continue
			}
			st.handleReport(m, watchdog)
		case <-watchdog.C:
			if !st.alive {
				st.kill(errNoSignOfLife.Error())
			}
		case sig := <-s.signals:
			st.handleSignal(sig)
		case <-st.ackTimer:
			st.powerDown()
		case <-st.stopTimer:
			st.kill(fmt.Sprintf("the guest did not stop its apps within %s of the stop request or of the power-button press", s.stopTimeout))
		case <-proc.Done():
			break loop
		}
	}
	qemuErr := proc.Wait()
	// QEMU closed its ends; the relays finish the output already sent.
	waitTimeout(&relays, 5*time.Second)
	for m := range drain(reports) {
		st.handleReport(m, watchdog)
	}

	switch {
	case st.killReason == errNoSignOfLife.Error() && st.stopAsked:
		// A stop during a boot that never finished must not lead to
		// booting again under TCG.
		return 0, fmt.Errorf("pod %s was stopped while its guest was booting, and the guest showed no sign of life within %s", s.pod.UUID, bootTimeout)
	case st.killReason == errNoSignOfLife.Error():
		return 0, errNoSignOfLife
	case st.forced:
		s.log.Warn("pod stopped with --force; the apps' exit statuses are not recorded")
		return ForcedStopExitStatus, nil
	case st.podStatus >= 0:
		s.log.Debug("pod exited", "status", st.podStatus, "after", time.Since(start))
		return st.podStatus, nil
	case st.killReason != "":
		return 0, fmt.Errorf("pod %s: the VM was killed because %s%s", s.pod.UUID, st.killReason, console.explain(s.debug))
	case qemuErr != nil:
		return 0, fmt.Errorf("the VM of pod %s failed: %w%s", s.pod.UUID, qemuErr, console.explain(s.debug))
	default:
		return 0, fmt.Errorf("the VM of pod %s stopped before the pod reported its exit status%s", s.pod.UUID, console.explain(s.debug))
	}
}

// attemptState holds the guest's reports and the stop requests of one boot
// attempt.
type attemptState struct {
	sup      *supervisor
	proc     *qemu.Process
	status   net.Conn
	sessions *enterproxy.Proxy
	start    time.Time

	alive       bool
	serving     bool
	podStatus   int
	stopPending bool
	stopAsked   bool
	interrupts  int
	forced      bool
	killReason  string
	stopTimer   <-chan time.Time
	// ackTimer fires when the agent has not acknowledged a stop request.
	ackTimer <-chan time.Time
	// powerDownCancel ends a QMP power-down in progress.
	powerDownCancel context.CancelFunc
}

func (st *attemptState) handleReport(m report.Message, watchdog *time.Timer) {
	s := st.sup
	switch m.Kind {
	case report.Hello:
		if !st.alive {
			st.alive = true
			watchdog.Stop()
			s.log.Debug("guest reached user space", "after", time.Since(st.start))
		}
	case report.Stopping:
		st.ackTimer = nil
		s.log.Debug("the guest agent took the stop request")
	case report.Serving:
		st.serving = true
		st.sessions.AgentReady()
		if st.stopPending {
			st.sendStop()
		}
	case report.Ready:
		if err := pod.MarkReady(s.podDir); err != nil {
			s.log.Error("mark pod ready failed", "error", err)
		}
	case report.Exit:
		if !s.knownApp(m.App) {
			s.log.Warn("the guest reported the exit of an unknown app; ignored", "app", m.App)
			return
		}
		if err := pod.WriteStatus(s.podDir, m.App, m.Status); err != nil {
			s.log.Error("record exit status failed", "app", m.App, "error", err)
		}
		s.log.Debug("app exited", "app", m.App, "status", m.Status)
	case report.PodExit:
		if st.podStatus < 0 {
			st.podStatus = m.Status
		}
		// The guest has nothing left to do but unmount and reboot.
		s.log.Debug("pod finished, ending the VM", "status", m.Status, "after", time.Since(st.start))
		st.proc.Kill()
	}
}

// knownApp reports whether app is an app of the pod: one it booted with,
// or, in a mutable pod, one that rkt app add has put into the pod manifest
// since.
func (s *supervisor) knownApp(app string) bool {
	if _, ok := s.pod.App(app); ok {
		return true
	}
	if !s.pod.Mutable {
		return false
	}
	manifest, err := pod.LoadManifest(s.podDir)
	if err != nil {
		s.log.Error("read the pod manifest failed", "error", err)
		return false
	}
	for _, ra := range manifest.Apps {
		if ra.Name.String() == app {
			return true
		}
	}
	return false
}

// handleSignal stops the pod. SIGTERM (rkt stop) and the first SIGINT ask
// the guest to stop its apps. A second SIGINT kills the VM, and so does
// SIGUSR1 (rkt stop --force).
func (st *attemptState) handleSignal(sig os.Signal) {
	s := st.sup
	switch sig {
	case syscall.SIGUSR1:
		st.forced = true
		st.proc.Kill()
		return
	case syscall.SIGINT:
		st.interrupts++
		if st.interrupts > 1 {
			st.kill("of a second interrupt")
			return
		}
	}
	if st.stopAsked {
		s.log.Info("stop already requested", "signal", sig)
		return
	}
	st.stopAsked = true
	s.log.Info("stopping the pod", "signal", sig)
	st.stopTimer = time.After(s.stopTimeout)
	st.ackTimer = time.After(stopAckTimeout)
	if !st.serving {
		// The agent has not opened the status port yet, and the guest
		// drops what arrives on a port that no process has open.
		st.stopPending = true
		return
	}
	st.sendStop()
}

func (st *attemptState) sendStop() {
	st.stopPending = false
	if _, err := io.WriteString(st.status, "stop\n"); err != nil {
		st.kill(fmt.Sprintf("sending the stop request to the guest failed: %v", err))
	}
}

// powerDown presses the guest's ACPI power button through QMP because the
// agent did not acknowledge the stop request, and gives the guest's shutdown
// the full stop timeout again before QEMU is killed.
func (st *attemptState) powerDown() {
	s := st.sup
	st.ackTimer = nil
	s.log.Warn("the guest agent did not acknowledge the stop request; pressing the guest's ACPI power button through QMP", "timeout", stopAckTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.stopTimeout)
	st.powerDownCancel = cancel
	go pressPowerButton(ctx, s.log)
	st.stopTimer = time.After(s.stopTimeout)
}

// powerButtonRepeat is how often the power button is pressed again until
// the guest shuts down. A press that the guest has taken only repeats its
// reboot request, and one pressed while the guest's button service was
// not reading would otherwise be lost.
const powerButtonRepeat = 3 * time.Second

// pressPowerButton presses the guest's power button through QMP every
// powerButtonRepeat until ctx ends, which the end of the pod or the stop
// timeout brings.
func pressPowerButton(ctx context.Context, log *slog.Logger) {
	for ctx.Err() == nil {
		press, cancel := context.WithTimeout(ctx, powerButtonRepeat)
		// PowerDown waits for the guest's shutdown, which ends the pod,
		// so an error only means that the guest has not shut down yet. A
		// power-down that never ends the pod ends in the kill of the stop
		// timeout, which is reported.
		err := qemu.PowerDown(press, qmpSocket)
		if err == nil {
			cancel()
			return
		}
		log.Debug("no guest shutdown yet after an ACPI power-button press", "error", err)
		// A press that failed at once waits for its interval too.
		<-press.Done()
		cancel()
	}
}

func (st *attemptState) kill(reason string) {
	if st.killReason == "" {
		st.killReason = reason
	}
	st.proc.Kill()
}
