package enter

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/stage1/enterproxy"
	"github.com/stage1-vm/stage1-vm/stage1/run"
)

// Dial connects to the run entrypoint's enter socket, from the pod
// directory of pod uuid, which names the pod in the error.
func Dial(uuid string) (net.Conn, error) {
	conn, err := net.Dial("unix", run.EnterSocket)
	if err != nil {
		pod := "the pod"
		if uuid != "" {
			pod = "pod " + uuid
		}
		return nil, fmt.Errorf("%s is not running, or has not started its VM yet: connect to %s: %w", pod, run.EnterSocket, err)
	}
	return conn, nil
}

// Call runs one action in the guest agent through the run entrypoint's
// enter socket, from the pod directory, and returns its exit status. input,
// if not nil, is sent as the action's stdin, then its end. Output of the
// action is dropped.
func Call(req agentproto.OpenRequest, input []byte) (int, error) {
	payload, err := agentproto.EncodeOpen(req)
	if err != nil {
		return 0, err
	}
	conn, err := Dial("")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	send := func(t agentproto.Type, p []byte) error {
		return agentproto.Write(conn, agentproto.Frame{Stream: enterproxy.ClientStream, Type: t, Payload: p})
	}
	if err := send(agentproto.Open, payload); err != nil {
		return 0, fmt.Errorf("send the request: %w", err)
	}
	if input != nil {
		for len(input) > 0 {
			n := min(len(input), agentproto.MaxData)
			if err := send(agentproto.Stdin, input[:n]); err != nil {
				return 0, fmt.Errorf("send the request's input: %w", err)
			}
			input = input[n:]
		}
		if err := send(agentproto.EOF, nil); err != nil {
			return 0, fmt.Errorf("send the request's input: %w", err)
		}
	}
	for {
		f, err := agentproto.Read(conn, agentproto.FromGuest)
		if errors.Is(err, io.EOF) {
			return 0, errors.New("the pod stopped before the guest agent returned a result")
		}
		if err != nil {
			return 0, fmt.Errorf("read the guest agent's response: %w", err)
		}
		switch f.Type {
		case agentproto.Exit:
			return int(f.Uint32()), nil
		case agentproto.Error:
			return 0, errors.New(Sanitize(string(f.Payload)))
		}
	}
}
