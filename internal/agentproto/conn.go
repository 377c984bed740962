package agentproto

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// ErrConnClosed is the error of streams whose connection ended.
var ErrConnClosed = errors.New("agent connection closed")

// errStreamFinished is returned by Recv after the stream's last frame.
var errStreamFinished = errors.New("stream finished")

// maxLoggedDrops bounds the warnings about frames for unknown streams.
const maxLoggedDrops = 10

// Conn multiplexes streams over one connection, such as the agent port.
// One side opens streams (the host); the other accepts them (the guest).
type Conn struct {
	rw       io.ReadWriter
	accepted []Type
	accept   func(*Stream, []byte)
	log      *slog.Logger

	writeMu sync.Mutex

	mu      sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32
	err     error
	dropped int
}

// NewConn returns a connection that reads frames of the accepted types
// from rw. accept, when not nil, runs in a goroutine of its own for every
// open frame, with the new stream and the frame's payload. Serve must run
// for the connection to receive anything.
func NewConn(rw io.ReadWriter, accepted []Type, accept func(*Stream, []byte), log *slog.Logger) *Conn {
	return &Conn{rw: rw, accepted: accepted, accept: accept, log: log, streams: map[uint32]*Stream{}}
}

// Serve reads frames until the connection ends or breaks the protocol, and
// then ends every stream. It returns nil on a clean end of the connection.
func (c *Conn) Serve() error {
	var err error
	for {
		var f Frame
		f, err = Read(c.rw, c.accepted)
		if err != nil {
			break
		}
		c.deliver(f)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	c.Shutdown(err)
	return err
}

// Shutdown ends every stream with ErrConnClosed, wrapping cause when it is
// not nil, and makes Open fail from then on.
func (c *Conn) Shutdown(cause error) {
	err := ErrConnClosed
	if cause != nil {
		err = fmt.Errorf("%w: %w", ErrConnClosed, cause)
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	c.mu.Unlock()
	for _, s := range streams {
		s.end(err)
	}
}

// Open starts a new stream with an open frame carrying payload.
func (c *Conn) Open(payload []byte) (*Stream, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	s := newStream(c, c.nextID)
	c.streams[s.ID] = s
	c.mu.Unlock()
	if err := c.write(Frame{Stream: s.ID, Type: Open, Payload: payload}); err != nil {
		s.fail(err)
		return nil, err
	}
	return s, nil
}

func (c *Conn) write(f Frame) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return Write(c.rw, f)
}

func (c *Conn) deliver(f Frame) {
	c.mu.Lock()
	s, ok := c.streams[f.Stream]
	if f.Type == Open {
		if ok {
			c.mu.Unlock()
			s.fail(protocolError("open frame for stream %d, which is already open", f.Stream))
			return
		}
		s = newStream(c, f.Stream)
		c.streams[s.ID] = s
		c.mu.Unlock()
		if c.accept != nil {
			go c.accept(s, f.Payload)
		}
		return
	}
	if !ok {
		c.dropped++
		dropped := c.dropped
		c.mu.Unlock()
		// Frames for a stream that just ended are normal: the peer had sent
		// them before it saw the end.
		if dropped <= maxLoggedDrops && c.log != nil {
			c.log.Debug("frame for an unknown stream dropped", "stream", f.Stream, "type", f.Type.String(), "dropped", dropped)
		}
		return
	}
	c.mu.Unlock()
	s.receive(f)
}

func (c *Conn) remove(s *Stream) {
	c.mu.Lock()
	if c.streams[s.ID] == s {
		delete(c.streams, s.ID)
	}
	c.mu.Unlock()
}

// Stream is one session's share of a Conn. Recv may run concurrently with
// Send and Finish.
type Stream struct {
	ID   uint32
	conn *Conn

	mu    sync.Mutex
	cond  *sync.Cond
	queue []Frame
	// inFlight counts data bytes received and not yet credited back.
	inFlight int
	// consumed counts data bytes that Recv returned and that were not yet
	// credited back.
	consumed int
	// credit is how many data bytes this side may still send.
	credit int
	// err ends the stream once the queue is empty.
	err error
}

func newStream(c *Conn, id uint32) *Stream {
	s := &Stream{ID: id, conn: c, credit: Window}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// receive queues a frame from the peer, or applies a credit frame.
func (s *Stream) receive(f Frame) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	switch {
	case f.Type == Credit:
		s.credit += int(f.Uint32())
		if s.credit > Window {
			s.mu.Unlock()
			s.fail(protocolError("credit on stream %d exceeds the window of %d bytes", s.ID, Window))
			return
		}
	case f.Type.IsData():
		if s.inFlight+len(f.Payload) > Window {
			s.mu.Unlock()
			s.fail(protocolError("%s data on stream %d exceeds the window of %d bytes", f.Type, s.ID, Window))
			return
		}
		s.inFlight += len(f.Payload)
		s.queue = append(s.queue, f)
	case f.Type == Exit || f.Type == Error:
		// The stream's last frame: anything after it is dropped.
		s.queue = append(s.queue, f)
		s.err = errStreamFinished
		s.mu.Unlock()
		s.conn.remove(s)
		s.cond.Broadcast()
		return
	default:
		s.queue = append(s.queue, f)
	}
	s.mu.Unlock()
	s.cond.Broadcast()
}

// Recv returns the next frame from the peer: data, eof, window-size or
// close on the guest; data, exit or error on the host. After the last
// frame it returns the error that ended the stream, which wraps
// ErrConnClosed or ErrProtocol, or is io.EOF after an exit or error frame.
func (s *Stream) Recv() (Frame, error) {
	s.mu.Lock()
	for len(s.queue) == 0 && s.err == nil {
		s.cond.Wait()
	}
	if len(s.queue) == 0 {
		err := s.err
		s.mu.Unlock()
		if errors.Is(err, errStreamFinished) {
			return Frame{}, io.EOF
		}
		return Frame{}, err
	}

	f := s.queue[0]
	s.queue[0] = Frame{}
	s.queue = s.queue[1:]
	grant := 0
	if f.Type.IsData() {
		s.consumed += len(f.Payload)
		// Credit goes back in batches, and at the latest when the queue
		// holds no more data, so the peer never waits for credit that this
		// side holds back.
		if s.consumed >= MaxData || len(s.queue) == 0 {
			grant = s.consumed
			s.consumed = 0
			s.inFlight -= grant
		}
	}
	ended := s.err != nil
	s.mu.Unlock()

	if grant > 0 && !ended {
		if err := s.conn.write(Frame{Stream: s.ID, Type: Credit, Payload: Uint32Payload(uint32(grant))}); err != nil {
			s.fail(err)
		}
	}
	return f, nil
}

// Send sends a frame of type t. Data is split into frames of at most
// MaxData bytes, and Send waits for credit from the peer between them.
func (s *Stream) Send(t Type, payload []byte) error {
	if !t.IsData() {
		if err := s.Err(); err != nil {
			return err
		}
		return s.conn.write(Frame{Stream: s.ID, Type: t, Payload: payload})
	}
	for len(payload) > 0 {
		s.mu.Lock()
		for s.credit == 0 && s.err == nil {
			s.cond.Wait()
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		n := min(len(payload), MaxData, s.credit)
		s.credit -= n
		s.mu.Unlock()
		if err := s.conn.write(Frame{Stream: s.ID, Type: t, Payload: payload[:n]}); err != nil {
			s.fail(err)
			return err
		}
		payload = payload[n:]
	}
	return nil
}

// Finish sends the stream's last frame (exit, error or close) and ends the
// stream on this side. Frames the peer sends after it are dropped.
func (s *Stream) Finish(t Type, payload []byte) error {
	err := s.Send(t, payload)
	s.end(errStreamFinished)
	return err
}

// Err returns the error that ended the stream, or nil while it is open.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// fail ends the stream with err and logs a protocol error.
func (s *Stream) fail(err error) {
	if errors.Is(err, ErrProtocol) && s.conn.log != nil {
		s.conn.log.Warn("stream ended by a protocol error", "stream", s.ID, "error", err)
	}
	s.end(err)
}

// end marks the stream ended, wakes its waiters and removes it from the
// connection. Recv still returns the frames already queued.
func (s *Stream) end(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.cond.Broadcast()
	s.conn.remove(s)
}
