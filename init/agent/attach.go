package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// Attach: the agent holds the app's end of every stream in stream or tty
// mode for the app's whole life, so attach clients come and go while the
// app runs.
//
// Output (stdout, stderr and the terminal's output) is read at once and
// copied to every client attached to it. Output produced while no client
// is attached is dropped, as rkt's iomux does, so the app never blocks on
// a full pipe. A client that falls more than clientQueueLength reads
// behind is detached with an error rather than slow the app down.
//
// Input (stdin and the terminal's input) from every attached client goes to
// the app in the order it arrives. Writes of different clients interleave
// at frame boundaries. The app's stdin stays open between clients: the end
// of one client's input and its detach do not reach the app, which reads
// the end of its stdin only when it exits.

// clientQueueLength bounds the output chunks waiting for one client; a
// chunk holds at most agentproto.MaxData bytes.
const clientQueueLength = 64

// attachRegistry contains the attachable streams of the running apps. Its
// zero value is ready to use.
type attachRegistry struct {
	mu   sync.Mutex
	apps map[string]*attachableApp
}

// attachableApp contains the agent's ends of one app's streams.
type attachableApp struct {
	// stdin is the write end of the app's stdin pipe in stream mode.
	stdin *os.File
	// tty is the master of the app's terminal in tty mode.
	tty *os.File
	// connected contains the streams that app-exec passed to the agent, by
	// guestconfig stream or endpoint name.
	connected map[string]bool
	clients   map[*attachClient]struct{}
}

// attachChunk is output for a client: its frame type and data.
type attachChunk struct {
	t    agentproto.Type
	data []byte
}

// attachClient is one attach stream.
type attachClient struct {
	stream *agentproto.Stream
	// endpoints are the agentproto.Attach* endpoints the client attached.
	endpoints []string
	queue     chan attachChunk
	// closed and lagged are guarded by the registry's mutex.
	closed bool
	lagged bool
}

func (c *attachClient) wants(endpoint string) bool {
	return slices.Contains(c.endpoints, endpoint)
}

func (c *attachClient) hasOutput() bool {
	return c.wants(agentproto.AttachStdout) || c.wants(agentproto.AttachStderr) || c.wants(agentproto.AttachTTYOut)
}

// app returns the app's entry, creating it. The caller holds r.mu.
func (r *attachRegistry) app(name string) *attachableApp {
	if r.apps == nil {
		r.apps = map[string]*attachableApp{}
	}
	app := r.apps[name]
	if app == nil {
		app = &attachableApp{connected: map[string]bool{}, clients: map[*attachClient]struct{}{}}
		r.apps[name] = app
	}
	return app
}

// broadcast queues data for every client of the app attached to endpoint,
// and detaches the clients whose queue is full.
func (r *attachRegistry) broadcast(name, endpoint string, t agentproto.Type, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	app := r.apps[name]
	if app == nil {
		return
	}
	for c := range app.clients {
		if !c.wants(endpoint) {
			continue
		}
		select {
		case c.queue <- attachChunk{t: t, data: data}:
		default:
			c.lagged = true
			r.closeClient(app, c)
		}
	}
}

// closeClient ends the client's queue and removes it. The caller holds r.mu.
func (r *attachRegistry) closeClient(app *attachableApp, c *attachClient) {
	if !c.closed {
		c.closed = true
		close(c.queue)
	}
	delete(app.clients, c)
}

// takeAttachable takes over an app stream that app-exec passed to the
// agent when the app's mode makes it attachable: the header "tty <app>"
// with the terminal's master, or "stdin|stdout|stderr <app>" of an app
// whose stream is in stream mode. It reports whether it took f.
func (a *Agent) takeAttachable(fields []string, f *os.File) bool {
	if len(fields) != 2 {
		return false
	}
	kind, name := fields[0], fields[1]
	cfg, ok := a.app(name)
	if !ok {
		return false
	}
	stdin, stdout, stderr := cfg.StdioModes()
	var isTTY bool
	switch {
	case kind == guestconfig.TTY && (stdin == guestconfig.ModeTTY || stdout == guestconfig.ModeTTY || stderr == guestconfig.ModeTTY):
		isTTY = true
	case kind == guestconfig.Stdin && stdin == guestconfig.ModeStream:
	case kind == guestconfig.Stdout && stdout == guestconfig.ModeStream:
	case kind == guestconfig.Stderr && stderr == guestconfig.ModeStream:
	default:
		return false
	}
	// The fd came over SCM_RIGHTS without close-on-exec; enter sessions
	// must not inherit it.
	unix.CloseOnExec(int(f.Fd()))

	a.attach.mu.Lock()
	app := a.attach.app(name)
	app.connected[kind] = true
	switch {
	case kind == guestconfig.Stdin:
		if app.stdin != nil {
			app.stdin.Close()
		}
		app.stdin = f
		a.attach.mu.Unlock()
		return true
	case isTTY:
		// The post-stop handler gets a terminal of its own, which replaces
		// the app's once the app has exited.
		app.tty = f
	}
	a.attach.mu.Unlock()

	done, tracked := a.trackOutput(name)
	if !tracked {
		f.Close()
		return true
	}
	endpoint, t := kind, agentproto.Stdout
	switch kind {
	case guestconfig.TTY:
		endpoint = agentproto.AttachTTYOut
	case guestconfig.Stderr:
		t = agentproto.Stderr
	}
	go func() {
		defer done()
		defer f.Close()
		a.copyToClients(name, endpoint, t, f)
		if isTTY {
			a.attach.mu.Lock()
			if app := a.attach.apps[name]; app != nil && app.tty == f {
				app.tty = nil
			}
			a.attach.mu.Unlock()
		}
	}()
	return true
}

// trackOutput counts an output stream of the app, whose end appExited
// waits for before it reports the app's exit.
func (a *Agent) trackOutput(app string) (done func(), ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	wg, ok := a.streams[app]
	if !ok {
		a.log.Error("stream for unknown app", "app", app)
		return nil, false
	}
	wg.Add(1)
	return wg.Done, true
}

// copyToClients reads the app's output until its end, and queues it for the
// clients attached to endpoint. A terminal's master reports the end with
// EIO once the app and its children closed the terminal.
func (a *Agent) copyToClients(app, endpoint string, t agentproto.Type, r io.Reader) {
	for {
		buf := make([]byte, agentproto.MaxData)
		n, err := r.Read(buf)
		if n > 0 {
			a.attach.broadcast(app, endpoint, t, buf[:n])
		}
		if err != nil {
			if err != io.EOF && !errors.Is(err, unix.EIO) {
				a.log.Warn("read app output for attach clients failed", "app", app, "endpoint", endpoint, "error", err)
			}
			return
		}
	}
}

// attachAppExited ends the app's attach sessions once its output has been
// queued for them, and closes its stdin.
func (a *Agent) attachAppExited(name string) {
	a.attach.mu.Lock()
	defer a.attach.mu.Unlock()
	app := a.attach.apps[name]
	if app == nil {
		return
	}
	for c := range app.clients {
		a.attach.closeClient(app, c)
	}
	if app.stdin != nil {
		app.stdin.Close()
	}
	delete(a.attach.apps, name)
}

// runAttach connects an attach stream to the app's streams until the app
// exits, the client detaches, or the client's input ends and it attached
// no output. Its status is 0 unless the client fell behind.
func (a *Agent) runAttach(s *agentproto.Stream, req agentproto.OpenRequest) (int, error) {
	c, err := a.attachClient(s, req)
	if err != nil {
		return 0, err
	}
	a.log.Info("attach session", "stream", s.ID, "app", req.App, "endpoints", req.Endpoints)

	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for chunk := range c.queue {
			if s.Send(chunk.t, chunk.data) != nil {
				// The client went away; its input loop detaches it.
				for range c.queue {
				}
				return
			}
		}
	}()
	inputEnded := make(chan struct{})
	go func() {
		defer close(inputEnded)
		a.forwardAttachInput(s, req.App, c)
	}()

	select {
	case <-sent:
		// The app exited, or the client fell behind.
	case <-inputEnded:
		a.detach(req.App, c)
		<-sent
	}
	a.attach.mu.Lock()
	lagged := c.lagged
	a.attach.mu.Unlock()
	if lagged {
		return 0, fmt.Errorf("the attach client fell behind the output of app %q by more than %d reads and was detached", req.App, clientQueueLength)
	}
	return 0, nil
}

// attachClient checks the request against the app's modes and registers a
// client for it.
func (a *Agent) attachClient(s *agentproto.Stream, req agentproto.OpenRequest) (*attachClient, error) {
	cfg, ok := a.app(req.App)
	if !ok {
		return nil, fmt.Errorf("app %q is not in the pod", req.App)
	}
	available := cfg.Endpoints()
	if len(available) == 0 {
		return nil, fmt.Errorf("app %q has no attachable streams: its stdin, stdout and stderr are in none of the modes stream and tty", req.App)
	}
	for _, e := range req.Endpoints {
		name := e
		if e == agentproto.AttachTTYIn || e == agentproto.AttachTTYOut {
			name = guestconfig.TTY
		}
		if !slices.Contains(available, name) {
			return nil, fmt.Errorf("app %q has no %s endpoint; its endpoints are: %s", req.App, name, strings.Join(available, ", "))
		}
	}

	c := &attachClient{stream: s, endpoints: req.Endpoints, queue: make(chan attachChunk, clientQueueLength)}
	a.attach.mu.Lock()
	defer a.attach.mu.Unlock()
	app, err := a.waitConnected(req.App, c)
	if err != nil {
		return nil, err
	}
	if app.tty != nil && req.Rows > 0 && req.Cols > 0 {
		_ = pty.Setsize(app.tty, &pty.Winsize{Rows: req.Rows, Cols: req.Cols})
	}
	app.clients[c] = struct{}{}
	return c, nil
}

// appStartTimeout bounds the wait for a starting app's streams: systemd
// reports an app's unit started before app-exec passed them to the agent.
const appStartTimeout = 10 * time.Second

// waitConnected returns the app's entry once app-exec has passed the
// streams that the client attaches. The caller holds a.attach.mu, which
// waitConnected releases while it waits.
func (a *Agent) waitConnected(name string, c *attachClient) (*attachableApp, error) {
	var needed []string
	for _, e := range c.endpoints {
		switch e {
		case agentproto.AttachTTYIn, agentproto.AttachTTYOut:
			needed = append(needed, guestconfig.TTY)
		default:
			needed = append(needed, e)
		}
	}
	deadline := time.Now().Add(appStartTimeout)
	for {
		app := a.attach.apps[name]
		if app != nil && !slices.ContainsFunc(needed, func(e string) bool { return !app.connected[e] }) &&
			(!slices.Contains(needed, guestconfig.TTY) || app.tty != nil) {
			return app, nil
		}
		a.mu.Lock()
		_, exited := a.exited[name]
		a.mu.Unlock()
		if exited || time.Now().After(deadline) {
			return nil, fmt.Errorf("app %q is not running", name)
		}
		// Polled, because the wait is short and happens only while the
		// app starts.
		a.attach.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		a.attach.mu.Lock()
	}
}

// detach removes the client, which ends its queue.
func (a *Agent) detach(name string, c *attachClient) {
	a.attach.mu.Lock()
	defer a.attach.mu.Unlock()
	if app := a.attach.apps[name]; app != nil {
		a.attach.closeClient(app, c)
	} else if !c.closed {
		c.closed = true
		close(c.queue)
	}
}

// forwardAttachInput writes the client's stdin frames to the app's stdin or
// terminal and applies its window sizes. It returns when the client
// detaches (close frame or lost connection), or at the end of its input if
// it attached no output.
func (a *Agent) forwardAttachInput(s *agentproto.Stream, name string, c *attachClient) {
	for {
		f, err := s.Recv()
		if err != nil {
			return
		}
		switch f.Type {
		case agentproto.Stdin:
			var in *os.File
			a.attach.mu.Lock()
			if app := a.attach.apps[name]; app != nil {
				// NOTE: a client of an app with both a terminal and a stdin
				// in stream mode writes only to the terminal; rkt's own
				// attach rejects combining the two.
				switch {
				case c.wants(agentproto.AttachTTYIn):
					in = app.tty
				case c.wants(agentproto.AttachStdin):
					in = app.stdin
				}
			}
			a.attach.mu.Unlock()
			if in != nil {
				// A failed write means that the app no longer reads its
				// input; the rest is dropped.
				_, _ = in.Write(f.Payload)
			}
		case agentproto.EOF:
			if !c.hasOutput() {
				return
			}
		case agentproto.WindowSize:
			a.attach.mu.Lock()
			if app := a.attach.apps[name]; app != nil && app.tty != nil {
				rows, cols := f.Size()
				_ = pty.Setsize(app.tty, &pty.Winsize{Rows: rows, Cols: cols})
			}
			a.attach.mu.Unlock()
		case agentproto.Close:
			return
		}
	}
}
