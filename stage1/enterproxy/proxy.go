// Package enterproxy runs inside the run entrypoint and forwards enter
// sessions to the guest agent. The enter entrypoint connects to a unix
// socket in the pod's runtime folder and speaks agentproto frames on
// stream 1; the proxy opens a stream on the agent port for each session
// and copies frames both ways. The proxy holds the port's only host-side
// connection, so it is the one place where sessions are multiplexed.
package enterproxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
)

// ClientStream is the stream id of a session on the enter socket, where
// each connection carries one session.
const ClientStream = 1

// FromClient are the frame types the proxy reads from the enter entrypoint
// after the open frame.
var FromClient = []agentproto.Type{agentproto.Stdin, agentproto.EOF, agentproto.WindowSize}

// Proxy accepts enter sessions on a unix socket and forwards them to the
// guest agent's port.
type Proxy struct {
	log      *slog.Logger
	listener net.Listener
	port     *agentproto.Conn
	portConn io.Closer

	ready     chan struct{}
	readyOnce sync.Once
	stopped   chan struct{}
	stopOnce  sync.Once

	mu      sync.Mutex
	clients map[net.Conn]struct{}
	active  sync.WaitGroup
}

// Listen creates the enter socket and starts serving sessions on port, the
// host end of the agent port, which Close closes. Sessions wait until
// AgentReady is called.
func Listen(socket string, port io.ReadWriteCloser, log *slog.Logger) (*Proxy, error) {
	_ = os.Remove(socket)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on the enter socket %s: %w", socket, err)
	}
	p := &Proxy{
		log:      log,
		listener: listener,
		port:     agentproto.NewConn(port, agentproto.FromGuest, nil, log),
		portConn: port,
		ready:    make(chan struct{}),
		stopped:  make(chan struct{}),
		clients:  map[net.Conn]struct{}{},
	}
	go func() {
		if err := p.port.Serve(); err != nil {
			log.Warn("the agent port broke the protocol; enter sessions end", "error", err)
		}
	}()
	go p.accept()
	return p, nil
}

// AgentReady lets sessions through to the agent, which reads its port from
// now on.
func (p *Proxy) AgentReady() {
	p.readyOnce.Do(func() { close(p.ready) })
}

// Close stops accepting sessions, ends the open ones with an error frame
// and waits for them. It closes the agent port, which also ends a write to
// a guest that stopped reading. A client that reads nothing is
// disconnected after closeTimeout.
func (p *Proxy) Close() error {
	p.stopOnce.Do(func() { close(p.stopped) })
	err := p.listener.Close()
	p.port.Shutdown(errors.New("the pod stopped"))
	_ = p.portConn.Close()

	done := make(chan struct{})
	go func() { p.active.Wait(); close(done) }()
	select {
	case <-done:
		return err
	case <-time.After(closeTimeout):
	}
	p.mu.Lock()
	for c := range p.clients {
		c.Close()
	}
	p.mu.Unlock()
	<-done
	return err
}

// closeTimeout bounds how long Close waits for clients to take their last
// frames.
const closeTimeout = 2 * time.Second

// openTimeout bounds the wait for a new client's open frame.
const openTimeout = 10 * time.Second

func (p *Proxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			select {
			case <-p.stopped:
			default:
				p.log.Error("accept on the enter socket failed; enter sessions are no longer served", "error", err)
			}
			return
		}
		p.mu.Lock()
		p.clients[client] = struct{}{}
		p.mu.Unlock()
		p.active.Add(1)
		go func() {
			defer p.active.Done()
			p.serve(client)
			client.Close()
			p.mu.Lock()
			delete(p.clients, client)
			p.mu.Unlock()
		}()
	}
}

// serve runs one session: the open frame from the client, then frames in
// both directions until the guest sends the exit status or an error, or
// either side goes away.
func (p *Proxy) serve(client net.Conn) {
	_ = client.SetReadDeadline(time.Now().Add(openTimeout))
	open, err := agentproto.Read(client, []agentproto.Type{agentproto.Open})
	if err != nil {
		p.log.Warn("invalid enter request", "error", err)
		return
	}
	_ = client.SetReadDeadline(time.Time{})
	select {
	case <-p.ready:
	case <-p.stopped:
		sendError(client, "the pod stopped before its guest agent started")
		return
	}
	stream, err := p.port.Open(open.Payload)
	if err != nil {
		sendError(client, fmt.Sprintf("open a session with the guest agent: %v", err))
		return
	}
	log := p.log.With("stream", stream.ID)
	log.Debug("enter session started")

	go func() {
		for {
			f, err := agentproto.Read(client, FromClient)
			if err != nil {
				// The client went away: the guest ends the command. After
				// the guest's exit frame this sends nothing.
				_ = stream.Finish(agentproto.Close, nil)
				return
			}
			if err := stream.Send(f.Type, f.Payload); err != nil {
				return
			}
		}
	}()

	for {
		f, err := stream.Recv()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
			case errors.Is(err, agentproto.ErrConnClosed):
				// The guest agent goes away when the pod stops.
				sendError(client, "the pod stopped during the session, and its guest agent closed the connection")
			default:
				sendError(client, fmt.Sprintf("the session with the guest agent ended: %v", err))
			}
			log.Debug("enter session ended", "error", err)
			return
		}
		f.Stream = ClientStream
		if err := agentproto.Write(client, f); err != nil {
			log.Debug("enter client went away", "error", err)
			_ = stream.Finish(agentproto.Close, nil)
			return
		}
		if f.Type == agentproto.Exit || f.Type == agentproto.Error {
			log.Debug("enter session ended", "type", f.Type.String())
			return
		}
	}
}

func sendError(client net.Conn, msg string) {
	_ = agentproto.Write(client, agentproto.Frame{Stream: ClientStream, Type: agentproto.Error, Payload: agentproto.ErrorPayload(msg)})
}
