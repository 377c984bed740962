package agentproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func header(stream uint32, t Type, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, stream)
	b = append(b, byte(t))
	return binary.BigEndian.AppendUint32(b, length)
}

func TestFrameRoundTrip(t *testing.T) {
	frames := []Frame{
		{Stream: 1, Type: Stdout, Payload: []byte("hello\n")},
		{Stream: 7, Type: Exit, Payload: Uint32Payload(255)},
		{Stream: 2, Type: Error, Payload: ErrorPayload("app \"x\" is not in the pod")},
		{Stream: 3, Type: Credit, Payload: Uint32Payload(Window)},
		{Stream: 4, Type: Stderr, Payload: bytes.Repeat([]byte{0}, MaxPayload)},
	}
	var buf bytes.Buffer
	for _, f := range frames {
		if err := Write(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range frames {
		got, err := Read(&buf, FromGuest)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.Stream != want.Stream || got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Errorf("frame %d = %d %s %d bytes, want %d %s %d bytes", i, got.Stream, got.Type, len(got.Payload), want.Stream, want.Type, len(want.Payload))
		}
	}
	if _, err := Read(&buf, FromGuest); err != io.EOF {
		t.Errorf("read after the last frame: %v, want io.EOF", err)
	}
}

func TestWindowSizePayload(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, Frame{Stream: 1, Type: WindowSize, Payload: SizePayload(40, 132)}); err != nil {
		t.Fatal(err)
	}
	f, err := Read(&buf, FromHost)
	if err != nil {
		t.Fatal(err)
	}
	if rows, cols := f.Size(); rows != 40 || cols != 132 {
		t.Errorf("size = %dx%d, want 40x132", rows, cols)
	}
}

func TestReadRejectsMalformedFrames(t *testing.T) {
	cases := []struct {
		name string
		data []byte
	}{
		{"oversized length", header(1, Stdout, MaxPayload+1)},
		{"maximum uint32 length", header(1, Stdout, 0xffffffff)},
		{"unknown type", append(header(1, Type(99), 1), 'x')},
		{"host type from the guest", append(header(1, Stdin, 1), 'x')},
		{"open from the guest", append(header(1, Open, 2), '{', '}')},
		{"stream 0", append(header(0, Stdout, 1), 'x')},
		{"empty data", header(1, Stdout, 0)},
		{"short exit", append(header(1, Exit, 1), 3)},
		{"exit status 256", append(header(1, Exit, 4), Uint32Payload(256)...)},
		{"zero credit", append(header(1, Credit, 4), Uint32Payload(0)...)},
		{"credit above the window", append(header(1, Credit, 4), Uint32Payload(Window+1)...)},
		{"error not UTF-8", append(header(1, Error, 2), 0xff, 0xfe)},
		{"error too long", append(header(1, Error, MaxErrorLength+1), bytes.Repeat([]byte("e"), MaxErrorLength+1)...)},
		{"truncated header", header(1, Stdout, 4)[:5]},
		{"truncated payload", append(header(1, Stdout, 10), "abc"...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.data), FromGuest)
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("Read = %v, want a protocol error", err)
			}
		})
	}
}

func TestReadRejectsPayloadOnHostFrames(t *testing.T) {
	for _, typ := range []Type{EOF, Close} {
		_, err := Read(bytes.NewReader(append(header(1, typ, 1), 'x')), FromHost)
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("%s frame with a payload: %v, want a protocol error", typ, err)
		}
	}
	_, err := Read(bytes.NewReader(append(header(1, WindowSize, 2), 0, 1)), FromHost)
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("window-size of 2 bytes: %v, want a protocol error", err)
	}
}

func TestWriteRejectsOversizedPayload(t *testing.T) {
	err := Write(io.Discard, Frame{Stream: 1, Type: Stdout, Payload: make([]byte, MaxPayload+1)})
	if err == nil {
		t.Error("Write accepted a payload above MaxPayload")
	}
}

func TestErrorPayloadCutsToValidUTF8(t *testing.T) {
	msg := strings.Repeat("é", MaxErrorLength)
	p := ErrorPayload(msg)
	if len(p) > MaxErrorLength {
		t.Errorf("payload of %d bytes, want at most %d", len(p), MaxErrorLength)
	}
	var buf bytes.Buffer
	if err := Write(&buf, Frame{Stream: 1, Type: Error, Payload: p}); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(&buf, FromGuest); err != nil {
		t.Errorf("the cut message does not read back: %v", err)
	}
}

func TestOpenRequestRoundTrip(t *testing.T) {
	want := OpenRequest{App: "web", Command: []string{"/bin/sh", "-c", "echo 'a\nb'"}, TTY: true, Rows: 24, Cols: 80, Term: "xterm"}
	data, err := EncodeOpen(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeOpen(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.App != want.App || strings.Join(got.Command, "\x00") != strings.Join(want.Command, "\x00") || got.TTY != want.TTY || got.Rows != 24 || got.Cols != 80 || got.Term != "xterm" {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	if got.Action != ActionEnter {
		t.Errorf("decoded action %q for a request without one, want %q", got.Action, ActionEnter)
	}
	if _, err := DecodeOpen([]byte(`{"app":"a","action":"reboot"}`)); err == nil || !strings.Contains(err.Error(), `"reboot"`) {
		t.Errorf("DecodeOpen of an unknown action = %v, want an error naming it", err)
	}
	if _, err := DecodeOpen([]byte(`{"command":["/bin/true"]}`)); err == nil {
		t.Error("DecodeOpen accepted a request without an app")
	}
	if _, err := EncodeOpen(OpenRequest{App: "a", Command: []string{strings.Repeat("x", MaxPayload)}}); err == nil {
		t.Error("EncodeOpen accepted a request larger than MaxPayload")
	}
}

func TestDecodeOpenAttach(t *testing.T) {
	data, err := EncodeOpen(OpenRequest{Action: ActionAttach, App: "web", Endpoints: []string{AttachStdin, AttachTTYOut}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := DecodeOpen(data)
	if err != nil {
		t.Fatal(err)
	}
	if req.Action != ActionAttach || len(req.Endpoints) != 2 || req.Endpoints[1] != AttachTTYOut {
		t.Errorf("decoded %+v", req)
	}

	for _, c := range []struct {
		payload, want string
	}{
		{`{"action":"attach","app":"web"}`, "no endpoints"},
		{`{"action":"attach","app":"web","endpoints":["stdin","journal"]}`, `unknown endpoint "journal"`},
	} {
		if _, err := DecodeOpen([]byte(c.payload)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.payload, err, c.want)
		}
	}
}
