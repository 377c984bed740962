package agentproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pair connects a host Conn and a guest Conn over an in-memory pipe. The
// guest's accept function receives each stream the host opens.
func pair(t *testing.T, accept func(*Stream, []byte)) (host, guest *Conn, hostEnd, guestEnd net.Conn) {
	t.Helper()
	hostEnd, guestEnd = net.Pipe()
	host = NewConn(hostEnd, FromGuest, nil, nil)
	guest = NewConn(guestEnd, FromHost, accept, nil)
	go host.Serve()
	go guest.Serve()
	t.Cleanup(func() { hostEnd.Close(); guestEnd.Close() })
	return host, guest, hostEnd, guestEnd
}

// recvWithin fails the test if Recv does not return within a generous
// bound; the bound only turns a deadlock into a failure.
func recvWithin(t *testing.T, s *Stream) (Frame, error) {
	t.Helper()
	type result struct {
		f   Frame
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := s.Recv()
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Recv blocked for 10 s")
	}
	return Frame{}, nil
}

// echoAccept copies each stream's stdin to stdout and exits with 3 at EOF.
func echoAccept(s *Stream, payload []byte) {
	for {
		f, err := s.Recv()
		if err != nil {
			return
		}
		switch f.Type {
		case Stdin:
			if s.Send(Stdout, f.Payload) != nil {
				return
			}
		case EOF:
			_ = s.Finish(Exit, Uint32Payload(3))
			return
		}
	}
}

func TestConnEchoesPastTheWindow(t *testing.T) {
	host, _, _, _ := pair(t, echoAccept)
	s, err := host.Open([]byte(`{"app":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	// Three windows of data need credit to flow both ways.
	want := bytes.Repeat([]byte("0123456789abcdef"), 3*Window/16)
	go func() {
		_ = s.Send(Stdin, want)
		_ = s.Send(EOF, nil)
	}()
	var got []byte
	for {
		f, err := recvWithin(t, s)
		if err != nil {
			t.Fatalf("Recv after %d bytes: %v", len(got), err)
		}
		if f.Type == Stdout {
			got = append(got, f.Payload...)
			continue
		}
		if f.Type != Exit || f.Uint32() != 3 {
			t.Fatalf("last frame %s %v, want exit 3", f.Type, f.Payload)
		}
		break
	}
	if !bytes.Equal(got, want) {
		t.Errorf("echoed %d bytes, want %d identical bytes", len(got), len(want))
	}
	if _, err := recvWithin(t, s); err != io.EOF {
		t.Errorf("Recv after exit = %v, want io.EOF", err)
	}
}

func TestConnStalledStreamDoesNotBlockOthers(t *testing.T) {
	host, _, _, _ := pair(t, func(s *Stream, payload []byte) {
		if string(payload) == "flood" {
			// Fills the host's window; the host never reads this stream.
			_ = s.Send(Stdout, make([]byte, 2*Window))
			return
		}
		echoAccept(s, payload)
	})
	if _, err := host.Open([]byte("flood")); err != nil {
		t.Fatal(err)
	}
	s, err := host.Open([]byte("echo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(Stdin, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	f, err := recvWithin(t, s)
	if err != nil || f.Type != Stdout || string(f.Payload) != "ping" {
		t.Errorf("second stream got %s %q, %v; want stdout \"ping\"", f.Type, f.Payload, err)
	}
}

func TestConnDataBeyondWindowEndsStream(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	host := NewConn(hostEnd, FromGuest, nil, nil)
	go host.Serve()
	// A hostile guest ignores the credit and reads only what it must.
	go io.Copy(io.Discard, guestEnd)
	s, err := host.Open([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, MaxData)
	for sent := 0; sent <= Window; sent += len(chunk) {
		if err := Write(guestEnd, Frame{Stream: s.ID, Type: Stdout, Payload: chunk}); err != nil {
			t.Fatal(err)
		}
	}
	// No Recv has run, so the host granted no credit: the frame past the
	// window must end the stream. Write returns once the host read the
	// frame, which may be before it handled it.
	deadline := time.Now().Add(10 * time.Second)
	for s.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the stream is still open 10 s after data beyond its window")
		}
		time.Sleep(time.Millisecond)
	}

	received := 0
	for {
		f, err := recvWithin(t, s)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("stream ended with %v, want a protocol error", err)
			}
			break
		}
		received += len(f.Payload)
	}
	if received > Window {
		t.Errorf("the host accepted %d bytes, more than the window of %d", received, Window)
	}
}

func TestConnMalformedFrameEndsEveryStream(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	host := NewConn(hostEnd, FromGuest, nil, nil)
	served := make(chan error, 1)
	go func() { served <- host.Serve() }()
	go io.Copy(io.Discard, guestEnd)
	s, err := host.Open([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := guestEnd.Write(header(s.ID, Stdout, MaxPayload+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := recvWithin(t, s); !errors.Is(err, ErrConnClosed) || !errors.Is(err, ErrProtocol) {
		t.Errorf("Recv = %v, want the connection closed by a protocol error", err)
	}
	if err := <-served; !errors.Is(err, ErrProtocol) {
		t.Errorf("Serve = %v, want a protocol error", err)
	}
	if _, err := host.Open([]byte("{}")); !errors.Is(err, ErrConnClosed) {
		t.Errorf("Open after the end = %v, want ErrConnClosed", err)
	}
}

func TestConnDropsFramesForUnknownStreams(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	host := NewConn(hostEnd, FromGuest, nil, nil)
	go host.Serve()
	go io.Copy(io.Discard, guestEnd)
	if err := Write(guestEnd, Frame{Stream: 42, Type: Stdout, Payload: []byte("stray")}); err != nil {
		t.Fatal(err)
	}
	s, err := host.Open([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(guestEnd, Frame{Stream: s.ID, Type: Exit, Payload: Uint32Payload(0)}); err != nil {
		t.Fatal(err)
	}
	f, err := recvWithin(t, s)
	if err != nil || f.Type != Exit {
		t.Errorf("Recv = %s, %v; want the exit frame", f.Type, err)
	}
}

func TestConnExcessCreditEndsStream(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	host := NewConn(hostEnd, FromGuest, nil, nil)
	go host.Serve()
	go io.Copy(io.Discard, guestEnd)
	s, err := host.Open([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	// The stream starts with a full window, so any credit exceeds it.
	if err := Write(guestEnd, Frame{Stream: s.ID, Type: Credit, Payload: Uint32Payload(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := recvWithin(t, s); !errors.Is(err, ErrProtocol) {
		t.Errorf("Recv = %v, want a protocol error", err)
	}
	if err := s.Send(Stdin, []byte("x")); err == nil {
		t.Error("Send on a stream ended by a protocol error succeeded")
	}
}
