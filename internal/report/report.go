// Package report is the line protocol on the guest's status port.
//
// The guest sends one message a line, in ASCII:
//
//	hello                   the guest init started (the boot watchdog's sign of life)
//	serving                 the agent reads this port and the agent port, so the
//	                        host may send "stop" and open enter sessions
//	ready                   every app has been started
//	stopping                the agent took the host's stop request
//	exit <app> <status>     an app ended with an exit status of 0 to 255
//	pod-exit <status>       every app has stopped, the shares are synced, and the
//	                        pod's status is this; the host may end the VM
//
// The host treats every line as untrusted input: Parse checks the form, the
// app name and the range, and rejects anything else.
package report

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/appc/spec/schema/types"
)

// MaxLineLength is the longest line the host accepts, newline excluded.
const MaxLineLength = 512

// Kind is the type of a message.
type Kind string

const (
	Hello    Kind = "hello"
	Serving  Kind = "serving"
	Ready    Kind = "ready"
	Stopping Kind = "stopping"
	Exit     Kind = "exit"
	PodExit  Kind = "pod-exit"
)

// Message is one parsed line.
type Message struct {
	Kind Kind
	// App is set for Exit.
	App string
	// Status is set for Exit and PodExit.
	Status int
}

// String renders the message as a line without the newline.
func (m Message) String() string {
	switch m.Kind {
	case Exit:
		return fmt.Sprintf("%s %s %d", m.Kind, m.App, m.Status)
	case PodExit:
		return fmt.Sprintf("%s %d", m.Kind, m.Status)
	default:
		return string(m.Kind)
	}
}

// Parse parses one line without its newline.
func Parse(line string) (Message, error) {
	if len(line) > MaxLineLength {
		return Message{}, fmt.Errorf("report line of %d bytes is longer than %d", len(line), MaxLineLength)
	}
	fields := strings.Split(line, " ")
	switch Kind(fields[0]) {
	case Hello, Serving, Ready, Stopping:
		if len(fields) != 1 {
			return Message{}, fmt.Errorf("invalid report line %q: %s takes no arguments", line, fields[0])
		}
		return Message{Kind: Kind(fields[0])}, nil
	case Exit:
		if len(fields) != 3 {
			return Message{}, fmt.Errorf("invalid report line %q: expected \"exit <app> <status>\"", line)
		}
		if _, err := types.NewACName(fields[1]); err != nil {
			return Message{}, fmt.Errorf("invalid report line %q: app name: %w", line, err)
		}
		status, err := parseStatus(fields[2])
		if err != nil {
			return Message{}, fmt.Errorf("invalid report line %q: %w", line, err)
		}
		return Message{Kind: Exit, App: fields[1], Status: status}, nil
	case PodExit:
		if len(fields) != 2 {
			return Message{}, fmt.Errorf("invalid report line %q: expected \"pod-exit <status>\"", line)
		}
		status, err := parseStatus(fields[1])
		if err != nil {
			return Message{}, fmt.Errorf("invalid report line %q: %w", line, err)
		}
		return Message{Kind: PodExit, Status: status}, nil
	}
	return Message{}, fmt.Errorf("invalid report line %q: unknown message", line)
}

func parseStatus(s string) (int, error) {
	status, err := strconv.Atoi(s)
	if err != nil || status < 0 || status > 255 || strconv.Itoa(status) != s {
		return 0, fmt.Errorf("exit status %q is not a number from 0 to 255", s)
	}
	return status, nil
}
