// Package attach is the attach entrypoint, which rkt attach runs when
// RKT_EXPERIMENT_ATTACH=true: `attach --action=list|auto-attach|custom-attach
// --app=NAME --debug=BOOL` with the pod directory as the working directory,
// rkt's stdio and the environment RKT_STAGE1_ENTERCMD, RKT_STAGE1_ENTERPID
// and PATH. It connects rkt's stdin, stdout and stderr to the app's streams
// in stream mode, or to its terminal in tty mode, through the run
// entrypoint's enter socket and the guest agent (packages enterproxy and
// agentproto).
//
// A client detaches, leaving the app running, when it gets SIGINT, SIGTERM
// or SIGHUP, when the user types DetachKey on a terminal in raw mode, or
// when its input ends and it attached no output. It ends with status 0 when
// it detaches or the app exits.
package attach

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/stage1/enter"
	"github.com/stage1-vm/stage1-vm/stage1/enterproxy"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
	"github.com/stage1-vm/stage1-vm/stage1/run"
)

// ErrorExitStatus is attach's exit status when it fails, the same as the
// run entrypoint's.
const ErrorExitStatus = run.ErrorExitStatus

// DetachKey is Ctrl-], which detaches from a terminal in raw mode, as in
// telnet and virsh console.
const DetachKey = 0x1d

// EnvEnterPID is the variable in which rkt passes the pod's pid (rkt 1.30.0).
const EnvEnterPID = "RKT_STAGE1_ENTERPID"

// Main runs the attach entrypoint and returns its exit status.
func Main(args []string) int {
	level := slog.LevelWarn
	if slices.Contains(args, "--debug=true") || slices.Contains(args, "--debug") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	status, err := attach(args, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: attach: %v\n", err)
		return ErrorExitStatus
	}
	return status
}

func attach(args []string, log *slog.Logger) (int, error) {
	flags, err := ParseFlags(args)
	if err != nil {
		return 0, err
	}
	podDir, err := os.Getwd()
	if err != nil {
		return 0, err
	}
	uuid := filepath.Base(podDir)

	available, err := appEndpoints(podDir, flags.App)
	if err != nil {
		return 0, fmt.Errorf("pod %s: %w", uuid, err)
	}
	if err := checkRunning(podDir, uuid); err != nil {
		return 0, err
	}
	if flags.Action == ActionList {
		for _, e := range available {
			fmt.Println(e)
		}
		return 0, nil
	}
	endpoints, err := Select(flags, available)
	if err != nil {
		return 0, err
	}

	conn, err := enter.Dial(uuid)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	log.Debug("attaching", "pod", uuid, "app", flags.App, "endpoints", endpoints)
	s := &session{conn: conn, log: log, app: flags.App, endpoints: endpoints}
	return s.run()
}

// appEndpoints returns the attach endpoints of the app from the modes in
// the pod manifest, or an error when it has none.
func appEndpoints(podDir, name string) ([]string, error) {
	manifest, err := pod.LoadManifest(podDir)
	if err != nil {
		return nil, err
	}
	ra, err := pod.FindApp(manifest, name)
	if err != nil {
		return nil, err
	}
	var app guestconfig.App
	if err := pod.SetStdioModes(&app, *ra, len(manifest.Apps)); err != nil {
		return nil, fmt.Errorf("app %s: %w", name, err)
	}
	available := app.Endpoints()
	if len(available) == 0 {
		stdin, stdout, stderr := app.StdioModes()
		return nil, fmt.Errorf("app %q has no attachable streams: its stdin is %s, its stdout %s and its stderr %s; run it with --stdin, --stdout or --stderr set to stream or tty",
			name, stdin, stdout, stderr)
	}
	return available, nil
}

// checkRunning fails unless the pod's run entrypoint, whose pid rkt passes
// in EnvEnterPID or the pod's pid file holds, still runs.
func checkRunning(podDir, uuid string) error {
	value := os.Getenv(EnvEnterPID)
	source := EnvEnterPID
	if value == "" {
		data, err := os.ReadFile(filepath.Join(podDir, "pid"))
		if err != nil {
			return fmt.Errorf("pod %s is not running: read its pid file: %w", uuid, err)
		}
		value, source = strings.TrimSpace(string(data)), "the pid file"
	}
	pid, err := strconv.Atoi(value)
	if err != nil || pid <= 0 {
		return fmt.Errorf("invalid pod pid %q in %s", value, source)
	}
	if err := unix.Kill(pid, 0); err != nil {
		return fmt.Errorf("pod %s is not running: its run entrypoint (pid %d) is gone: %w", uuid, pid, err)
	}
	return nil
}

// Select returns the agentproto.Attach* endpoints to attach: every
// available one for auto-attach, the requested ones for custom-attach.
// available holds guestconfig endpoint names.
func Select(flags *Flags, available []string) ([]string, error) {
	var endpoints []string
	if flags.Action == ActionAuto {
		for _, e := range available {
			if e == guestconfig.TTY {
				endpoints = append(endpoints, agentproto.AttachTTYIn, agentproto.AttachTTYOut)
			} else {
				endpoints = append(endpoints, e)
			}
		}
		return endpoints, nil
	}
	for _, e := range flags.Endpoints {
		name := e
		if e == agentproto.AttachTTYIn || e == agentproto.AttachTTYOut {
			name = guestconfig.TTY
		}
		if !slices.Contains(available, name) {
			return nil, fmt.Errorf("app %q has no %s endpoint; its endpoints are: %s", flags.App, name, strings.Join(available, ", "))
		}
	}
	return flags.Endpoints, nil
}

// session is one attach session on the enter socket.
type session struct {
	conn      net.Conn
	log       *slog.Logger
	app       string
	endpoints []string
	writeMu   sync.Mutex
}

func (s *session) send(t agentproto.Type, payload []byte) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return agentproto.Write(s.conn, agentproto.Frame{Stream: enterproxy.ClientStream, Type: t, Payload: payload})
}

func (s *session) wants(endpoint string) bool { return slices.Contains(s.endpoints, endpoint) }

// result is how a session ended.
type result struct {
	status int
	err    error
}

func (s *session) run() (int, error) {
	ttyIn := s.wants(agentproto.AttachTTYIn)
	tty := ttyIn || s.wants(agentproto.AttachTTYOut)
	input := ttyIn || s.wants(agentproto.AttachStdin)
	stdin := int(os.Stdin.Fd())

	req := agentproto.OpenRequest{Action: agentproto.ActionAttach, App: s.app, Endpoints: s.endpoints}
	sizeFd := -1
	if tty {
		for _, fd := range []int{stdin, int(os.Stdout.Fd())} {
			if term.IsTerminal(fd) {
				sizeFd = fd
				break
			}
		}
	}
	if sizeFd >= 0 {
		if cols, rows, err := term.GetSize(sizeFd); err == nil {
			req.Rows, req.Cols = enter.ClampSize(rows), enter.ClampSize(cols)
		}
	}
	payload, err := agentproto.EncodeOpen(req)
	if err != nil {
		return 0, err
	}
	if err := s.send(agentproto.Open, payload); err != nil {
		return 0, fmt.Errorf("send the attach request: %w", err)
	}

	raw := ttyIn && term.IsTerminal(stdin)
	if raw {
		state, err := term.MakeRaw(stdin)
		if err != nil {
			return 0, fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer term.Restore(stdin, state)
	}
	if sizeFd >= 0 {
		resized := make(chan os.Signal, 1)
		signal.Notify(resized, syscall.SIGWINCH)
		defer signal.Stop(resized)
		go s.forwardResizes(sizeFd, resized)
	}
	// A signal detaches: the deferred calls restore the terminal, and the
	// closed connection makes the guest drop this client.
	detach := make(chan os.Signal, 1)
	signal.Notify(detach, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(detach)

	results := make(chan result, 2)
	if input {
		go s.forwardStdin(raw, results)
	}
	go func() { results <- s.receive() }()
	select {
	case r := <-results:
		return r.status, r.err
	case sig := <-detach:
		s.log.Debug("detached by a signal", "signal", sig.String())
		return 0, nil
	}
}

// receive copies the app's output to stdout and stderr until the exit
// status or an error arrives.
func (s *session) receive() result {
	for {
		f, err := agentproto.Read(s.conn, agentproto.FromGuest)
		if errors.Is(err, io.EOF) {
			return result{err: errors.New("the pod stopped during the session")}
		}
		if err != nil {
			return result{err: fmt.Errorf("read from the run entrypoint: %w", err)}
		}
		switch f.Type {
		case agentproto.Stdout:
			// A failed write drops the output; the session goes on.
			_, _ = os.Stdout.Write(f.Payload)
		case agentproto.Stderr:
			_, _ = os.Stderr.Write(f.Payload)
		case agentproto.Exit:
			return result{status: int(f.Uint32())}
		case agentproto.Error:
			// The message comes from the guest.
			return result{err: errors.New(enter.Sanitize(string(f.Payload)))}
		}
	}
}

// forwardStdin sends stdin to the app, and an eof frame at its end. On a
// raw terminal, DetachKey ends the session with status 0 instead.
func (s *session) forwardStdin(raw bool, results chan<- result) {
	buf := make([]byte, agentproto.MaxData)
	for {
		n, err := os.Stdin.Read(buf)
		data := buf[:n]
		detach := false
		if raw {
			if i := slices.Index(data, DetachKey); i >= 0 {
				data, detach = data[:i], true
			}
		}
		if len(data) > 0 {
			if s.send(agentproto.Stdin, data) != nil {
				return
			}
		}
		if detach {
			fmt.Fprintf(os.Stderr, "\r\nstage1-vm: detached from app %s\r\n", s.app)
			results <- result{}
			return
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = s.send(agentproto.EOF, nil)
			} else {
				s.log.Warn("read stdin failed", "error", err)
			}
			return
		}
	}
}

func (s *session) forwardResizes(fd int, resized <-chan os.Signal) {
	for range resized {
		cols, rows, err := term.GetSize(fd)
		if err != nil {
			continue
		}
		if s.send(agentproto.WindowSize, agentproto.SizePayload(enter.ClampSize(rows), enter.ClampSize(cols))) != nil {
			return
		}
	}
}
