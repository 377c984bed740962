// Package agent is the guest's agent, a systemd service that owns the
// virtio-serial ports: it copies the apps' output to the host, reports exit
// statuses, decides when the pod ends, takes the host's stop request and
// runs the host's enter sessions.
//
// The pod ends when the first app fails (its status becomes the pod's),
// when every app has exited with 0, or on the host's stop request. The
// agent then stops the remaining apps through systemd, flushes the guest's
// writes to the shares, reports the pod's status and signals systemd to
// reboot. The host ends QEMU on the report, without waiting for the
// reboot. Were the host gone, the reboot would end QEMU anyway, because
// QEMU runs with -no-reboot.
package agent

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/init/ports"
	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/report"
)

// sigRebootSystemd is SIGRTMIN+5, on which systemd starts reboot.target.
// systemd counts from glibc's SIGRTMIN, which is 34 on Linux.
const sigRebootSystemd = unix.Signal(34 + 5)

// streamDrainTimeout bounds the wait for an app's output streams to close
// after it exited; a child the app left behind may still hold them.
const streamDrainTimeout = 3 * time.Second

// Agent is the state of the running agent.
type Agent struct {
	pod    *guestconfig.Pod
	log    *slog.Logger
	status *os.File
	// agent carries the enter sessions (package agentproto).
	agent  *os.File
	stdout *os.File
	stderr *os.File
	// journal receives a copy of the apps' output.
	journal *journal

	outMu sync.Mutex
	errMu sync.Mutex

	mu         sync.Mutex
	statusMu   sync.Mutex
	endOnce    sync.Once
	finishOnce sync.Once
	// appActionMu serializes the app actions of a mutable pod.
	appActionMu sync.Mutex
	// added and addedUnits hold the apps added at run time.
	added      map[string]guestconfig.App
	addedUnits map[string][]string
	streams    map[string]*sync.WaitGroup
	exited     map[string]int
	stopping   bool
	podStatus  int
	podExited  bool

	// attach contains the app streams in stream and tty mode (attach.go).
	attach attachRegistry
}

// Run starts the agent and serves until systemd stops it.
func Run(log *slog.Logger) error {
	pod, err := guestconfig.Load(filepath.Join(guestconfig.GuestConfigDir, guestconfig.FileName))
	if err != nil {
		return err
	}
	a := &Agent{pod: pod, log: log, streams: map[string]*sync.WaitGroup{}, exited: map[string]int{},
		added: map[string]guestconfig.App{}, addedUnits: map[string][]string{}}
	a.journal = newJournal(log, JournalSocket, JournalVarlinkSocket)
	go a.journal.flushWhenStarted()
	for _, app := range pod.Apps {
		a.streams[app.Name] = &sync.WaitGroup{}
	}
	if a.status, err = ports.Open(guestconfig.StatusPort, os.O_RDWR); err != nil {
		return err
	}
	if a.stdout, err = ports.Open(guestconfig.StdoutPort, os.O_WRONLY); err != nil {
		return err
	}
	if a.stderr, err = ports.Open(guestconfig.StderrPort, os.O_WRONLY); err != nil {
		return err
	}
	if a.agent, err = ports.Open(guestconfig.AgentPort, os.O_RDWR); err != nil {
		return err
	}
	sessions := agentproto.NewConn(a.agent, agentproto.FromHost, a.serveStream, log)

	ioListener, err := listenNet("unixpacket", ports.IOSocket)
	if err != nil {
		return err
	}
	controlListener, err := listen(ports.ControlSocket)
	if err != nil {
		return err
	}
	go a.serve(ioListener, a.handleStream)
	go a.serve(controlListener, a.handleControl)
	go a.readHost()
	go func() {
		if err := sessions.Serve(); err != nil {
			log.Error("agent port failed", "error", err)
		}
	}()
	// The host sends nothing on a port before this report, because the
	// guest drops what arrives on a port that no process has open.
	a.send(report.Message{Kind: report.Serving})

	terminate := make(chan os.Signal, 1)
	signal.Notify(terminate, unix.SIGTERM, unix.SIGINT)
	if err := notifyReady(); err != nil {
		return err
	}
	<-terminate
	// systemd stops the agent after every app, so every status is in,
	// unless endPod has already reported the pod's exit.
	a.finish()
	return nil
}

// endPod stops every app and reports the pod's exit, then has systemd
// reboot, which ends QEMU if the host has not already. The apps are
// stopped before the reboot: the reboot also unmounts the apps' API file
// systems and protected paths, dozens of mounts an app, and the apps'
// stop would wait behind those unmounts.
func (a *Agent) endPod() {
	a.endOnce.Do(a.stopAppsAndFinish)
}

func (a *Agent) stopAppsAndFinish() {
	units := a.appUnits()
	if len(units) > 0 {
		// systemctl returns once every app's stop job has finished,
		// ExecStopPost and its exit report included.
		if err := systemctl(append([]string{"stop"}, units...)...); err != nil {
			a.log.Error("stop the apps failed; the reboot stops them", "error", err)
		}
	}
	a.finish()
	a.reboot()
}

// appUnits returns the units of every app of the pod, added ones included.
func (a *Agent) appUnits() []string {
	var units []string
	for _, app := range a.pod.Apps {
		units = append(units, guestconfig.AppUnit(app.Name))
	}
	a.mu.Lock()
	for name := range a.added {
		units = append(units, guestconfig.AppUnit(name))
	}
	a.mu.Unlock()
	return units
}

// finish flushes the journal and the guest's writes to the shares, then
// reports the pod's exit status to the host, once.
func (a *Agent) finish() {
	a.finishOnce.Do(func() {
		if err := a.journal.sync(); err != nil {
			a.log.Warn("the journal on the host may lack the last entries", "error", err)
		}
		// The shares use cache=loose, so the apps' writes may still be in
		// guest memory until this sync.
		unix.Sync()
		a.mu.Lock()
		status := a.podStatus
		a.mu.Unlock()
		a.sendPodExit(status)
	})
}

func listen(path string) (net.Listener, error) {
	return listenNet("unix", path)
}

func listenNet(network, path string) (net.Listener, error) {
	_ = os.Remove(path)
	l, err := net.Listen(network, path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

func (a *Agent) serve(l net.Listener, handle func(net.Conn)) {
	for {
		conn, err := l.Accept()
		if err != nil {
			a.log.Error("accept failed", "socket", l.Addr().String(), "error", err)
			return
		}
		go handle(conn)
	}
}

// handleStream copies one app stream to its port. The stream arrives as one
// message: the header "stdout <app>" or "stderr <app>" with the read end of
// the app's pipe attached (SCM_RIGHTS).
func (a *Agent) handleStream(c net.Conn) {
	defer c.Close()
	conn := c.(*net.UnixConn)
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		a.log.Error("read stream header failed", "error", err)
		return
	}
	pipe, err := receivedFile(oob[:oobn])
	if err != nil {
		a.log.Error("invalid stream message", "error", err)
		return
	}
	fields := strings.Fields(string(buf[:n]))
	if a.takeAttachable(fields, pipe) {
		return
	}
	defer pipe.Close()
	if len(fields) == 2 && fields[0] == "stdin" {
		a.copyStdin(fields[1], pipe)
		return
	}
	if len(fields) != 2 || (fields[0] != "stdout" && fields[0] != "stderr") {
		a.log.Error("invalid stream header", "header", string(buf[:n]))
		return
	}
	a.mu.Lock()
	wg, ok := a.streams[fields[1]]
	if ok {
		wg.Add(1)
	}
	a.mu.Unlock()
	if !ok {
		a.log.Error("stream for unknown app", "app", fields[1])
		return
	}
	defer wg.Done()

	port, mu := a.stdout, &a.outMu
	if fields[0] == "stderr" {
		port, mu = a.stderr, &a.errMu
	}
	journal := a.journal.stream(fields[1], fields[0])
	defer journal.close()
	data := make([]byte, 32*1024)
	for {
		n, err := pipe.Read(data)
		if n > 0 {
			mu.Lock()
			_, werr := port.Write(data[:n])
			mu.Unlock()
			if werr != nil {
				a.log.Error("write app output to the host failed", "app", fields[1], "error", werr)
			}
			journal.write(data[:n])
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			a.log.Error("read app output failed", "app", fields[1], "error", err)
			return
		}
	}
}

// copyStdin copies rkt run's stdin from the stdin port into the write end
// of the app's stdin pipe. When the host closes its end of the port, the
// pipe closes too, which ends the app's input.
func (a *Agent) copyStdin(app string, pipe *os.File) {
	if cfg, ok := a.app(app); !ok || !cfg.Stdin {
		a.log.Error("stdin requested by an app that has none", "app", app)
		return
	}
	port, err := ports.Open(guestconfig.StdinPort, os.O_RDONLY)
	if err != nil {
		a.log.Error("open the stdin port failed", "app", app, "error", err)
		return
	}
	defer port.Close()
	if _, err := io.Copy(pipe, port); err != nil {
		a.log.Warn("copy stdin to the app stopped", "app", app, "error", err)
	}
}

// receivedFile returns the one file descriptor passed in a control message.
func receivedFile(oob []byte) (*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, rights...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("expected one file descriptor, got %d", len(fds))
	}
	return os.NewFile(uintptr(fds[0]), "app-stream"), nil
}

// handleControl serves one command from a unit: "ready" or
// "exited <app> <status>". It replies "ok" once the command took effect.
func (a *Agent) handleControl(conn net.Conn) {
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		a.log.Error("read control command failed", "error", err)
		return
	}
	fields := strings.Fields(line)
	switch {
	case len(fields) == 1 && fields[0] == "ready":
		a.send(report.Message{Kind: report.Ready})
	case len(fields) == 3 && fields[0] == "exited":
		status, err := strconv.Atoi(fields[2])
		if err != nil {
			fmt.Fprintf(conn, "invalid status %q\n", fields[2])
			return
		}
		a.appExited(fields[1], status)
	default:
		fmt.Fprintf(conn, "unknown command %q\n", strings.TrimSpace(line))
		return
	}
	fmt.Fprintln(conn, "ok")
}

// appExited waits for the app's output to reach the host, reports its
// status and ends the pod if this exit decides it.
func (a *Agent) appExited(app string, status int) {
	a.mu.Lock()
	wg := a.streams[app]
	a.mu.Unlock()
	if wg != nil {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(streamDrainTimeout):
			a.log.Warn("app output still open after exit; a child process may hold it", "app", app)
		}
	}
	a.attachAppExited(app)
	a.send(report.Message{Kind: report.Exit, App: app, Status: status})

	a.mu.Lock()
	a.exited[app] = status
	// The apps of a mutable pod come and go; only a stop ends the pod.
	if a.pod.Mutable {
		a.mu.Unlock()
		return
	}
	// The pod's status is the first non-zero one, also while stopping: an
	// app that fails on SIGTERM makes the stopped pod fail.
	if a.podStatus == 0 {
		a.podStatus = status
	}
	end := false
	if !a.stopping && (status != 0 || len(a.exited) == len(a.pod.Apps)) {
		a.stopping = true
		end = true
	}
	a.mu.Unlock()
	if end {
		// Not waited for: this app's own stop waits for this function.
		go a.endPod()
	}
}

// readHost serves the host's commands on the status port: "stop" stops
// every app and ends the pod.
func (a *Agent) readHost() {
	scanner := bufio.NewScanner(a.status)
	for scanner.Scan() {
		switch line := scanner.Text(); line {
		case "stop":
			a.log.Info("stop requested by the host")
			// Without this acknowledgement the host presses the ACPI power button.
			a.send(report.Message{Kind: report.Stopping})
			a.mu.Lock()
			a.stopping = true
			a.mu.Unlock()
			go a.endPod()
		default:
			a.log.Warn("unknown command from the host", "command", line)
		}
	}
}

func (a *Agent) sendPodExit(status int) {
	a.mu.Lock()
	if a.podExited {
		a.mu.Unlock()
		return
	}
	a.podExited = true
	a.mu.Unlock()
	a.send(report.Message{Kind: report.PodExit, Status: status})
}

func (a *Agent) send(m report.Message) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	if _, err := a.status.WriteString(m.String() + "\n"); err != nil {
		a.log.Error("send report to the host failed", "report", m.String(), "error", err)
	}
}

func (a *Agent) reboot() {
	if err := unix.Kill(1, sigRebootSystemd); err != nil {
		a.log.Error("ask systemd to reboot failed", "error", err)
	}
}

// notifyReady sends systemd READY=1 (the sd_notify protocol) once the agent serves.
func notifyReady() error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	_, err = conn.Write([]byte("READY=1"))
	return err
}
