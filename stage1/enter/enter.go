// Package enter is the enter entrypoint, which rkt enter and rkt app exec
// run: `enter --pid=<pid> --appname=<app> -- [command...]` with the pod
// directory as the working directory and rkt's stdio. The command runs in
// the app's environment inside the VM, through the run entrypoint's enter
// socket and the guest agent (packages enterproxy and agentproto), and its
// exit status becomes enter's.
package enter

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/stage1/enterproxy"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
	"github.com/stage1-vm/stage1-vm/stage1/run"
)

// ErrorExitStatus is enter's exit status when stage1-vm fails rather than
// the command, the same as the run entrypoint's.
const ErrorExitStatus = run.ErrorExitStatus

// Flags are the enter entrypoint's arguments.
type Flags struct {
	PID     int
	App     string
	Command []string
}

// ParseFlags parses `--pid=<pid> --appname=<app> [--] [command...]`.
func ParseFlags(args []string) (*Flags, error) {
	fs := flag.NewFlagSet("enter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pid := fs.Int("pid", 0, "pid of the pod's run entrypoint")
	app := fs.String("appname", "", "name of the app whose environment the command runs in")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("invalid enter arguments %q: %w", strings.Join(args, " "), err)
	}
	if *pid <= 0 {
		return nil, fmt.Errorf("invalid or missing --pid %d: expected the pid of the pod's run entrypoint", *pid)
	}
	if *app == "" {
		return nil, errors.New("missing --appname: name the app to enter")
	}
	if _, err := types.NewACName(*app); err != nil {
		return nil, fmt.Errorf("invalid --appname %q: %w", *app, err)
	}
	return &Flags{PID: *pid, App: *app, Command: fs.Args()}, nil
}

// Main runs the enter entrypoint and returns its exit status.
func Main(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	status, err := enter(args, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: enter: %v\n", err)
		return ErrorExitStatus
	}
	return status
}

func enter(args []string, log *slog.Logger) (int, error) {
	flags, err := ParseFlags(args)
	if err != nil {
		return 0, err
	}
	podDir, err := os.Getwd()
	if err != nil {
		return 0, err
	}
	uuid := filepath.Base(podDir)

	manifest, err := pod.LoadManifest(podDir)
	if err != nil {
		return 0, err
	}
	if manifest.Apps.Get(types.ACName(flags.App)) == nil {
		var names []string
		for _, a := range manifest.Apps {
			names = append(names, a.Name.String())
		}
		return 0, fmt.Errorf("app %q is not in pod %s; its apps are: %s", flags.App, uuid, strings.Join(names, ", "))
	}

	if err := unix.Kill(flags.PID, 0); err != nil {
		return 0, fmt.Errorf("pod %s is not running: its run entrypoint (pid %d) is gone: %w", uuid, flags.PID, err)
	}
	conn, err := Dial(uuid)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	s := &session{conn: conn, log: log}
	return s.run(flags)
}

// session is one enter session on the enter socket.
type session struct {
	conn    net.Conn
	log     *slog.Logger
	writeMu sync.Mutex
}

func (s *session) send(t agentproto.Type, payload []byte) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return agentproto.Write(s.conn, agentproto.Frame{Stream: enterproxy.ClientStream, Type: t, Payload: payload})
}

func (s *session) run(flags *Flags) (int, error) {
	stdin := int(os.Stdin.Fd())
	req := agentproto.OpenRequest{App: flags.App, Command: flags.Command, TTY: term.IsTerminal(stdin)}
	if req.TTY {
		if cols, rows, err := term.GetSize(stdin); err == nil {
			req.Rows, req.Cols = ClampSize(rows), ClampSize(cols)
		}
		req.Term = os.Getenv("TERM")
	}
	payload, err := agentproto.EncodeOpen(req)
	if err != nil {
		return 0, err
	}
	if err := s.send(agentproto.Open, payload); err != nil {
		return 0, fmt.Errorf("send the enter request: %w", err)
	}

	if req.TTY {
		state, err := term.MakeRaw(stdin)
		if err != nil {
			return 0, fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		defer term.Restore(stdin, state)
		resized := make(chan os.Signal, 1)
		signal.Notify(resized, syscall.SIGWINCH)
		defer signal.Stop(resized)
		go s.forwardResizes(stdin, resized)
	}
	// A signal ends the session; the deferred calls restore the terminal,
	// and the closed connection makes the guest kill the command.
	ended := make(chan os.Signal, 1)
	signal.Notify(ended, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(ended)

	go s.forwardStdin(req.TTY)
	result := make(chan sessionResult, 1)
	go func() { result <- s.receive() }()
	select {
	case r := <-result:
		return r.status, r.err
	case sig := <-ended:
		return 128 + int(sig.(syscall.Signal)), nil
	}
}

type sessionResult struct {
	status int
	err    error
}

// receive copies the command's output to stdout and stderr until the exit
// status or an error arrives.
func (s *session) receive() sessionResult {
	for {
		f, err := agentproto.Read(s.conn, agentproto.FromGuest)
		if errors.Is(err, io.EOF) {
			return sessionResult{err: errors.New("the pod stopped during the session")}
		}
		if err != nil {
			return sessionResult{err: fmt.Errorf("read from the run entrypoint: %w", err)}
		}
		switch f.Type {
		case agentproto.Stdout:
			// A failed write to rkt's stdout drops the output; the session
			// still ends with the command's status.
			_, _ = os.Stdout.Write(f.Payload)
		case agentproto.Stderr:
			_, _ = os.Stderr.Write(f.Payload)
		case agentproto.Exit:
			return sessionResult{status: int(f.Uint32())}
		case agentproto.Error:
			// The message may come from the guest.
			return sessionResult{err: errors.New(Sanitize(string(f.Payload)))}
		}
	}
}

// forwardStdin sends stdin to the command, then an eof frame at its end.
func (s *session) forwardStdin(tty bool) {
	buf := make([]byte, agentproto.MaxData)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			if s.send(agentproto.Stdin, buf[:n]) != nil {
				return
			}
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
		if s.send(agentproto.WindowSize, agentproto.SizePayload(ClampSize(rows), ClampSize(cols))) != nil {
			return
		}
	}
}

// ClampSize converts a terminal dimension to the protocol's uint16.
func ClampSize(n int) uint16 {
	return uint16(min(max(n, 0), 0xffff))
}

// Sanitize replaces control characters, so that a message from the guest
// cannot drive the user's terminal.
func Sanitize(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
