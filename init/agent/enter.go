package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// serveStream runs the action of one stream that the host opened. The
// stream's last frame is the action's exit status, or an error when the
// action failed.
func (a *Agent) serveStream(s *agentproto.Stream, payload []byte) {
	log := a.log.With("stream", s.ID)
	req, err := agentproto.DecodeOpen(payload)
	var status int
	if err == nil {
		switch req.Action {
		case agentproto.ActionEnter:
			status, err = a.runEnter(s, req)
		case agentproto.ActionAppAdd, agentproto.ActionAppStart, agentproto.ActionAppStop, agentproto.ActionAppRm:
			status, err = a.runAppAction(s, req)
		case agentproto.ActionAttach:
			status, err = a.runAttach(s, req)
		default:
			err = fmt.Errorf("the guest agent does not support the action %q", req.Action)
		}
	}
	if err != nil {
		log.Error("session failed", "action", req.Action, "app", req.App, "error", err)
		_ = s.Finish(agentproto.Error, agentproto.ErrorPayload(err.Error()))
		return
	}
	log.Info("session ended", "action", req.Action, "app", req.App, "status", status)
	_ = s.Finish(agentproto.Exit, agentproto.Uint32Payload(uint32(status)))
}

// runEnter runs the command of an enter session, with a pseudo-terminal or
// with pipes, until it exits.
func (a *Agent) runEnter(s *agentproto.Stream, req agentproto.OpenRequest) (int, error) {
	if _, ok := a.app(req.App); !ok {
		return 0, fmt.Errorf("app %q is not in the pod", req.App)
	}
	a.log.Info("enter session", "stream", s.ID, "app", req.App, "command", req.Command, "tty", req.TTY)

	// The guest binary's enter-exec command enters the app's rootfs, ids,
	// environment and working directory, as app-exec does for the app.
	args := append([]string{"enter-exec", req.App, "--"}, req.Command...)
	cmd := exec.Command(guestconfig.GuestInit, args...)
	cmd.Env = []string{}
	if req.TTY && req.Term != "" {
		cmd.Env = []string{"TERM=" + req.Term}
	}
	if req.TTY {
		return runWithTTY(s, cmd, req)
	}
	return runWithPipes(s, cmd)
}

func runWithTTY(s *agentproto.Stream, cmd *exec.Cmd, req agentproto.OpenRequest) (int, error) {
	size := &pty.Winsize{Rows: req.Rows, Cols: req.Cols}
	// StartWithSize makes the terminal the command's controlling terminal
	// in a session of its own.
	terminal, err := pty.StartWithSize(cmd, size)
	if err != nil {
		return 0, fmt.Errorf("start %q with a terminal: %w", cmd.Args, err)
	}
	defer terminal.Close()

	output := make(chan struct{})
	go func() {
		defer close(output)
		// Reading the terminal fails with EIO once every process closed it.
		_ = copyToStream(s, agentproto.Stdout, terminal)
	}()
	go forwardInput(s, cmd, terminal, func(rows, cols uint16) {
		_ = pty.Setsize(terminal, &pty.Winsize{Rows: rows, Cols: cols})
	})

	status := wait(cmd)
	waitOutput(output, terminal)
	return status, nil
}

func runWithPipes(s *agentproto.Stream, cmd *exec.Cmd) (int, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer stdoutR.Close()
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutW.Close()
		return 0, err
	}
	defer stderrR.Close()
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	// A session of its own, so that a close from the host ends the
	// command's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		return 0, fmt.Errorf("start %q: %w", cmd.Args, err)
	}

	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); _ = copyToStream(s, agentproto.Stdout, stdoutR) }()
	go func() { defer copies.Done(); _ = copyToStream(s, agentproto.Stderr, stderrR) }()
	output := make(chan struct{})
	go func() { copies.Wait(); close(output) }()
	go forwardInput(s, cmd, stdin, nil)

	status := wait(cmd)
	waitOutput(output, stdoutR, stderrR)
	stdin.Close()
	return status, nil
}

// forwardInput writes the host's stdin frames to in until the stream
// ends. EOF closes in, except on a terminal, where it is ignored. A close
// frame, or the end of the connection, kills the command's session.
func forwardInput(s *agentproto.Stream, cmd *exec.Cmd, in io.WriteCloser, resize func(rows, cols uint16)) {
	for {
		f, err := s.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				killSession(cmd)
			}
			return
		}
		switch f.Type {
		case agentproto.Stdin:
			// A failed write means the command no longer reads its
			// input; the rest of the input is dropped.
			_, _ = in.Write(f.Payload)
		case agentproto.EOF:
			if resize == nil {
				in.Close()
			}
		case agentproto.WindowSize:
			if resize != nil {
				resize(f.Size())
			}
		case agentproto.Close:
			killSession(cmd)
			return
		}
	}
}

func killSession(cmd *exec.Cmd) {
	if cmd.Process != nil {
		// The command leads its own session and process group.
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	}
}

// copyToStream sends what r produces as frames of type t.
func copyToStream(s *agentproto.Stream, t agentproto.Type, r io.Reader) error {
	buf := make([]byte, agentproto.MaxData)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := s.Send(t, buf[:n]); serr != nil {
				return serr
			}
		}
		if err != nil {
			return err
		}
	}
}

// wait waits for the command and returns its exit status as a shell
// reports it: the exit code, or 128 plus the signal number.
func wait(cmd *exec.Cmd) int {
	err := cmd.Wait()
	state := cmd.ProcessState
	if state == nil {
		return 1
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return 1
	}
	return state.ExitCode()
}

// waitOutput waits until the command's output reached the host, at most
// streamDrainTimeout, because a child left in the background may hold the
// output open. Then it closes the readers, which ends the copies unless
// they wait for credit from a host that stopped reading.
func waitOutput(done <-chan struct{}, readers ...*os.File) {
	select {
	case <-done:
	case <-time.After(streamDrainTimeout):
	}
	for _, r := range readers {
		r.Close()
	}
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}
