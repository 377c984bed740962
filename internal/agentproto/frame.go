// Package agentproto is the framed protocol between the host and the guest
// agent on the virtio-serial port org.stage1-vm.agent. It multiplexes the
// streams of several enter sessions over that one port.
//
// A frame is a 9-byte header followed by its payload:
//
//	stream id  uint32, big-endian, never 0
//	type       uint8
//	length     uint32, big-endian, at most MaxPayload
//	payload    length bytes
//
// The types, with the side that sends them and their payload:
//
//	open         host   JSON OpenRequest: action, app, command, TTY, window size, endpoints
//	stdin        host   bytes for the command's stdin (or its terminal)
//	stdout       guest  bytes from the command's stdout (or its terminal)
//	stderr       guest  bytes from the command's stderr (never with a TTY)
//	eof          host   no payload: stdin reached its end
//	window-size  host   rows and columns, uint16 each
//	exit         guest  uint32 exit status from 0 to 255; ends the stream
//	error        guest  UTF-8 message of at most MaxErrorLength bytes; ends the stream
//	credit       both   uint32 number of bytes the sender may send more
//	close        host   no payload: the client went away; end the command, or detach
//
// An attach stream connects to the app's own stdin, stdout and stderr or
// its terminal instead of running a command. There, eof and close only
// detach the client, and the exit frame (status 0) follows the app's exit.
//
// Flow control: each side may have at most Window bytes of stdin, stdout or
// stderr payload in flight per stream. The receiver grants more with credit
// frames as it consumes data, so a session whose reader stalls never blocks
// the port for the others. Data frames are never empty.
//
// The guest is untrusted. Read checks the header, the type, the direction
// and the payload of every frame before it returns it, and Conn treats data
// beyond the granted window, or credit beyond Window, as a protocol error.
// A malformed header leaves the port out of step, so it ends the whole
// connection, while an error confined to one stream ends that stream.
//
// Topology: the port is a single connection whose host end QEMU connects to
// a unix socket that the run entrypoint listens on, and only the run
// entrypoint reads it. The enter entrypoint connects to a second unix socket
// of the run entrypoint and speaks the same frames on stream 1; the run
// entrypoint gives each session a stream id on the port and forwards. The
// run entrypoint already supervises the VM for the pod's whole life, so the
// multiplexer lives as long as the port does, and a session ends cleanly
// when the pod stops. Both sockets live in the pod's runtime folder, which
// no share exports to the guest.
package agentproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// Type is the type of a frame.
type Type uint8

// Frame types. The values are part of the protocol.
const (
	Open       Type = 1
	Stdin      Type = 2
	Stdout     Type = 3
	Stderr     Type = 4
	EOF        Type = 5
	WindowSize Type = 6
	Exit       Type = 7
	Error      Type = 8
	Credit     Type = 9
	Close      Type = 10
)

var typeNames = map[Type]string{
	Open: "open", Stdin: "stdin", Stdout: "stdout", Stderr: "stderr", EOF: "eof",
	WindowSize: "window-size", Exit: "exit", Error: "error", Credit: "credit", Close: "close",
}

func (t Type) String() string {
	if name, ok := typeNames[t]; ok {
		return name
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// IsData reports whether frames of the type carry stream data, which flow
// control counts.
func (t Type) IsData() bool { return t == Stdin || t == Stdout || t == Stderr }

// Sizes of the protocol.
const (
	HeaderLength = 9
	// MaxPayload is the largest payload of any frame.
	MaxPayload = 64 * 1024
	// MaxData is the largest payload a sender puts in one data frame.
	MaxData = 16 * 1024
	// Window is the initial and maximum credit of each direction of a stream.
	Window = 256 * 1024
	// MaxErrorLength bounds the message of an error frame.
	MaxErrorLength = 1024
)

// Directions in which frames travel; each end reads only its peer's types.
var (
	// FromHost are the types the guest accepts.
	FromHost = []Type{Open, Stdin, EOF, WindowSize, Credit, Close}
	// FromGuest are the types the host accepts.
	FromGuest = []Type{Stdout, Stderr, Exit, Error, Credit}
)

// Frame is one decoded frame.
type Frame struct {
	Stream  uint32
	Type    Type
	Payload []byte
}

// ErrProtocol marks a frame that breaks the protocol.
var ErrProtocol = errors.New("agent protocol error")

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Write encodes one frame into w in a single Write call. The caller
// serializes concurrent writers.
func Write(w io.Writer, f Frame) error {
	if len(f.Payload) > MaxPayload {
		return fmt.Errorf("%s frame of %d bytes is larger than the maximum of %d", f.Type, len(f.Payload), MaxPayload)
	}
	buf := make([]byte, HeaderLength+len(f.Payload))
	binary.BigEndian.PutUint32(buf[0:4], f.Stream)
	buf[4] = byte(f.Type)
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(f.Payload)))
	copy(buf[HeaderLength:], f.Payload)
	_, err := w.Write(buf)
	return err
}

// Read decodes one frame from r and checks it: a type from accepted, a
// length within MaxPayload, and the payload form of its type. An error
// that wraps ErrProtocol means that the peer broke the protocol, and r may
// no longer be at a frame boundary. The end of r before a frame's first
// byte returns io.EOF.
func Read(r io.Reader, accepted []Type) (Frame, error) {
	var header [HeaderLength]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, protocolError("connection closed inside a frame header")
		}
		return Frame{}, err
	}
	f := Frame{Stream: binary.BigEndian.Uint32(header[0:4]), Type: Type(header[4])}
	length := binary.BigEndian.Uint32(header[5:9])
	if !typeIn(f.Type, accepted) {
		return Frame{}, protocolError("unexpected frame type %s on stream %d", f.Type, f.Stream)
	}
	if length > MaxPayload {
		return Frame{}, protocolError("%s frame of %d bytes on stream %d is larger than the maximum of %d", f.Type, length, f.Stream, MaxPayload)
	}
	f.Payload = make([]byte, length)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, protocolError("connection closed inside a %s frame of %d bytes: %v", f.Type, length, err)
	}
	if err := checkPayload(f); err != nil {
		return Frame{}, err
	}
	return f, nil
}

func typeIn(t Type, types []Type) bool {
	for _, a := range types {
		if t == a {
			return true
		}
	}
	return false
}

// checkPayload checks the payload's form for the frame's type. An open
// request's JSON is checked by DecodeOpen, on the guest.
func checkPayload(f Frame) error {
	n := len(f.Payload)
	switch f.Type {
	case Stdin, Stdout, Stderr:
		if n == 0 {
			return protocolError("empty %s frame on stream %d", f.Type, f.Stream)
		}
	case EOF, Close:
		if n != 0 {
			return protocolError("%s frame on stream %d has a payload of %d bytes, want none", f.Type, f.Stream, n)
		}
	case WindowSize:
		if n != 4 {
			return protocolError("window-size frame on stream %d has %d bytes, want 4", f.Stream, n)
		}
	case Exit:
		if n != 4 {
			return protocolError("exit frame on stream %d has %d bytes, want 4", f.Stream, n)
		}
		if status := binary.BigEndian.Uint32(f.Payload); status > 255 {
			return protocolError("exit status %d on stream %d is not from 0 to 255", status, f.Stream)
		}
	case Error:
		if n > MaxErrorLength || !utf8.Valid(f.Payload) {
			return protocolError("error frame on stream %d is not UTF-8 of at most %d bytes", f.Stream, MaxErrorLength)
		}
	case Credit:
		if n != 4 {
			return protocolError("credit frame on stream %d has %d bytes, want 4", f.Stream, n)
		}
		if c := binary.BigEndian.Uint32(f.Payload); c == 0 || c > Window {
			return protocolError("credit of %d bytes on stream %d is not from 1 to %d", c, f.Stream, Window)
		}
	}
	if f.Stream == 0 {
		return protocolError("%s frame on stream 0", f.Type)
	}
	return nil
}

// Uint32 returns the value of an exit or credit frame, which Read checked.
func (f Frame) Uint32() uint32 { return binary.BigEndian.Uint32(f.Payload) }

// Size returns the rows and columns of a window-size frame.
func (f Frame) Size() (rows, cols uint16) {
	return binary.BigEndian.Uint16(f.Payload[0:2]), binary.BigEndian.Uint16(f.Payload[2:4])
}

// Uint32Payload encodes the payload of an exit or credit frame.
func Uint32Payload(v uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, v)
}

// SizePayload encodes the payload of a window-size frame.
func SizePayload(rows, cols uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, rows)
	return binary.BigEndian.AppendUint16(b, cols)
}

// ErrorPayload encodes an error message, cut to MaxErrorLength bytes of
// valid UTF-8.
func ErrorPayload(msg string) []byte {
	if len(msg) > MaxErrorLength {
		msg = msg[:MaxErrorLength]
	}
	for !utf8.ValidString(msg) {
		msg = msg[:len(msg)-1]
	}
	return []byte(msg)
}

// Actions of an open request. A stream carries one action, and ends with
// an exit frame (the action's status) or an error frame.
const (
	// ActionEnter runs Command in the app's environment. It is the action
	// of a request that names none.
	ActionEnter = "enter"
	// ActionAttach connects the stream to the app's own stdin, stdout and
	// stderr, or its terminal.
	ActionAttach = "attach"
	// ActionAppAdd adds the app to a mutable pod. The stdin data of the
	// stream is the app's guest configuration (guestconfig.AddedApp, JSON).
	ActionAppAdd = "app-add"
	// ActionAppStart starts an added app; ActionAppStop stops it, with exit
	// status 5 when it is not running; ActionAppRm removes a stopped app.
	ActionAppStart = "app-start"
	ActionAppStop  = "app-stop"
	ActionAppRm    = "app-rm"
)

var actions = []string{ActionEnter, ActionAttach, ActionAppAdd, ActionAppStart, ActionAppStop, ActionAppRm}

// OpenRequest is the payload of an open frame.
type OpenRequest struct {
	// Action is the stream's action; empty means ActionEnter.
	Action string `json:"action,omitempty"`
	// App is the name of the app the action concerns; for enter, the app
	// whose environment the command runs in.
	App string `json:"app"`
	// Command is the command line; empty means the default shell.
	Command []string `json:"command"`
	// TTY requests a pseudo-terminal in the guest.
	TTY bool `json:"tty"`
	// Rows and Cols are the initial window size when TTY is set.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Term is the host's TERM, used when TTY is set and the app's
	// environment has none.
	Term string `json:"term,omitempty"`
	// Endpoints are what an attach stream connects, from AttachEndpoints:
	// the app's stdin, stdout and stderr in stream mode, and the input and
	// output of its terminal. Rows and Cols, when set, resize the app's
	// terminal.
	Endpoints []string `json:"endpoints,omitempty"`
}

// Attach endpoints. An attach stream's stdin frames go to the app's stdin
// or terminal; its stdout frames carry the app's stdout or terminal output
// and its stderr frames the app's stderr.
const (
	AttachStdin  = "stdin"
	AttachStdout = "stdout"
	AttachStderr = "stderr"
	AttachTTYIn  = "tty-in"
	AttachTTYOut = "tty-out"
)

// AttachEndpoints are the valid endpoints of an attach request.
var AttachEndpoints = []string{AttachStdin, AttachStdout, AttachStderr, AttachTTYIn, AttachTTYOut}

// EncodeOpen encodes an open request, and fails if it exceeds MaxPayload.
func EncodeOpen(req OpenRequest) ([]byte, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxPayload {
		return nil, fmt.Errorf("the command line and settings take %d bytes, more than the maximum of %d", len(data), MaxPayload)
	}
	return data, nil
}

// DecodeOpen decodes an open request.
func DecodeOpen(data []byte) (OpenRequest, error) {
	var req OpenRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return req, fmt.Errorf("invalid open request: %w", err)
	}
	if req.App == "" {
		return req, errors.New("invalid open request: no app")
	}
	if req.Action == "" {
		req.Action = ActionEnter
	}
	if !slices.Contains(actions, req.Action) {
		return req, fmt.Errorf("invalid open request: unknown action %q", req.Action)
	}
	if req.Action == ActionAttach {
		if len(req.Endpoints) == 0 {
			return req, errors.New("invalid attach request: no endpoints")
		}
		for _, e := range req.Endpoints {
			if !slices.Contains(AttachEndpoints, e) {
				return req, fmt.Errorf("invalid attach request: unknown endpoint %q, expected one of %v", e, AttachEndpoints)
			}
		}
	}
	return req, nil
}
