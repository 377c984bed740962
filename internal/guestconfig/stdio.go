package guestconfig

import (
	"fmt"
	"slices"
)

// StreamMode is the connection mode of an app's stdin, stdout or stderr.
// The values are those of rkt's per-app annotations
// coreos.com/rkt/stage2/stdin, stdout and stderr (rkt 1.30.0).
type StreamMode string

// Stream modes.
const (
	// ModeInteractive connects stdin to rkt run's stdin, as --interactive
	// does. For stdout and stderr it is the same as ModeLog.
	ModeInteractive StreamMode = "interactive"
	// ModeLog sends the stream to rkt run's stdout or stderr. It is the
	// default of stdout and stderr, and not valid for stdin.
	ModeLog StreamMode = "log"
	// ModeNull connects the stream to /dev/null. It is the default of stdin.
	ModeNull StreamMode = "null"
	// ModeStream lets attach clients write the app's stdin or read its
	// stdout or stderr.
	ModeStream StreamMode = "stream"
	// ModeTTY connects the stream to a pseudo-terminal in the guest whose
	// master attach clients read and write.
	ModeTTY StreamMode = "tty"
)

// Stream names, which are also the names of attach endpoints.
const (
	Stdin  = "stdin"
	Stdout = "stdout"
	Stderr = "stderr"
	// TTY is the endpoint of an app with at least one stream in ModeTTY.
	TTY = "tty"
)

// ParseStreamMode checks value as the mode of stream (Stdin, Stdout or
// Stderr). An empty value is the stream's default.
func ParseStreamMode(stream, value string) (StreamMode, error) {
	if value == "" {
		if stream == Stdin {
			return ModeNull, nil
		}
		return ModeLog, nil
	}
	valid := []StreamMode{ModeInteractive, ModeLog, ModeNull, ModeStream, ModeTTY}
	if stream == Stdin {
		valid = []StreamMode{ModeInteractive, ModeNull, ModeStream, ModeTTY}
	}
	mode := StreamMode(value)
	if !slices.Contains(valid, mode) {
		return "", fmt.Errorf("invalid %s mode %q: expected one of %v", stream, value, valid)
	}
	return mode, nil
}

// StdioModes returns the effective modes of the app's stdin, stdout and
// stderr. Stdin (--interactive) overrides the annotations, as in rkt:
// stdin comes from rkt run's stdin and the output goes to rkt run's.
func (a App) StdioModes() (stdin, stdout, stderr StreamMode) {
	if a.Stdin {
		return ModeInteractive, ModeLog, ModeLog
	}
	stdin, stdout, stderr = a.StdinMode, a.StdoutMode, a.StderrMode
	if stdin == "" {
		stdin = ModeNull
	}
	if stdout == "" || stdout == ModeInteractive {
		stdout = ModeLog
	}
	if stderr == "" || stderr == ModeInteractive {
		stderr = ModeLog
	}
	return stdin, stdout, stderr
}

// Endpoints returns the names of the app's attach endpoints in the order
// stdin, stdout, stderr, tty: one for each stream in ModeStream, and TTY
// when a stream is in ModeTTY.
func (a App) Endpoints() []string {
	stdin, stdout, stderr := a.StdioModes()
	var names []string
	for i, mode := range []StreamMode{stdin, stdout, stderr} {
		if mode == ModeStream {
			names = append(names, []string{Stdin, Stdout, Stderr}[i])
		}
	}
	if stdin == ModeTTY || stdout == ModeTTY || stderr == ModeTTY {
		names = append(names, TTY)
	}
	return names
}
