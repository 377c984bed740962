package enterproxy

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
)

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// echoGuest serves the guest end of the agent port: each session echoes
// its stdin to stdout and exits with 9 at EOF.
func echoGuest(guestEnd net.Conn) {
	conn := agentproto.NewConn(guestEnd, agentproto.FromHost, func(s *agentproto.Stream, _ []byte) {
		for {
			f, err := s.Recv()
			if err != nil {
				return
			}
			switch f.Type {
			case agentproto.Stdin:
				_ = s.Send(agentproto.Stdout, f.Payload)
			case agentproto.EOF:
				_ = s.Finish(agentproto.Exit, agentproto.Uint32Payload(9))
				return
			}
		}
	}, nil)
	go conn.Serve()
}

func dialClient(t *testing.T, socket string) net.Conn {
	t.Helper()
	client, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	return client
}

func send(t *testing.T, c net.Conn, typ agentproto.Type, payload []byte) {
	t.Helper()
	if err := agentproto.Write(c, agentproto.Frame{Stream: ClientStream, Type: typ, Payload: payload}); err != nil {
		t.Fatal(err)
	}
}

func TestProxyForwardsSession(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	echoGuest(guestEnd)
	socket := filepath.Join(t.TempDir(), "enter.sock")
	p, err := Listen(socket, hostEnd, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.AgentReady()

	client := dialClient(t, socket)
	defer client.Close()
	send(t, client, agentproto.Open, []byte(`{"app":"a"}`))
	send(t, client, agentproto.Stdin, []byte("ping"))
	send(t, client, agentproto.EOF, nil)

	f, err := agentproto.Read(client, agentproto.FromGuest)
	if err != nil || f.Type != agentproto.Stdout || string(f.Payload) != "ping" {
		t.Fatalf("first frame %s %q, %v; want stdout \"ping\"", f.Type, f.Payload, err)
	}
	f, err = agentproto.Read(client, agentproto.FromGuest)
	if err != nil || f.Type != agentproto.Exit || f.Uint32() != 9 {
		t.Fatalf("second frame %s %v, %v; want exit 9", f.Type, f.Payload, err)
	}
}

func TestProxyCloseEndsWaitingSession(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer guestEnd.Close()
	socket := filepath.Join(t.TempDir(), "enter.sock")
	p, err := Listen(socket, hostEnd, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	// The agent never reports that it serves.
	client := dialClient(t, socket)
	defer client.Close()
	send(t, client, agentproto.Open, []byte(`{"app":"a"}`))
	// A connection that the proxy has not accepted yet is reset by Close.
	waitAccepted(t, p)

	closeWithin(t, p)
	f, err := agentproto.Read(client, agentproto.FromGuest)
	if err != nil || f.Type != agentproto.Error {
		t.Errorf("frame after Close: %s, %v; want an error frame", f.Type, err)
	}
}

func TestProxyCloseWithGuestNotReading(t *testing.T) {
	// net.Pipe has no buffer, so the open frame's write blocks until the
	// guest end reads, which it never does.
	hostEnd, guestEnd := net.Pipe()
	defer guestEnd.Close()
	socket := filepath.Join(t.TempDir(), "enter.sock")
	p, err := Listen(socket, hostEnd, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	p.AgentReady()
	client := dialClient(t, socket)
	defer client.Close()
	send(t, client, agentproto.Open, []byte(`{"app":"a"}`))
	waitAccepted(t, p)
	// Give the proxy time to block in the write; Close must end it either way.
	time.Sleep(100 * time.Millisecond)
	closeWithin(t, p)
}

// closeWithin fails the test if Close blocks; the bound only turns a
// deadlock into a failure.
func closeWithin(t *testing.T, p *Proxy) {
	t.Helper()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked for 10 s")
	}
}

func waitAccepted(t *testing.T, p *Proxy) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.clients)
		p.mu.Unlock()
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not accept the client within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
