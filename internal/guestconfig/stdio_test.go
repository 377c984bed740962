package guestconfig

import (
	"slices"
	"strings"
	"testing"
)

func TestParseStreamMode(t *testing.T) {
	cases := []struct {
		stream, value string
		want          StreamMode
		err           string
	}{
		{Stdin, "", ModeNull, ""},
		{Stdout, "", ModeLog, ""},
		{Stderr, "", ModeLog, ""},
		{Stdin, "stream", ModeStream, ""},
		{Stdin, "tty", ModeTTY, ""},
		{Stdin, "interactive", ModeInteractive, ""},
		{Stdout, "null", ModeNull, ""},
		{Stderr, "log", ModeLog, ""},
		{Stdin, "log", "", `invalid stdin mode "log"`},
		{Stdout, "file", "", `invalid stdout mode "file"`},
		{Stderr, "TTY", "", `invalid stderr mode "TTY"`},
	}
	for _, c := range cases {
		got, err := ParseStreamMode(c.stream, c.value)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %q: error %v, want one containing %q", c.stream, c.value, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s %q = %q, %v; want %q", c.stream, c.value, got, err, c.want)
		}
	}
}

func TestEndpoints(t *testing.T) {
	cases := []struct {
		app  App
		want []string
	}{
		{App{}, nil},
		{App{StdinMode: ModeStream, StdoutMode: ModeStream, StderrMode: ModeStream}, []string{Stdin, Stdout, Stderr}},
		{App{StdinMode: ModeTTY, StdoutMode: ModeTTY, StderrMode: ModeTTY}, []string{TTY}},
		{App{StdinMode: ModeTTY, StdoutMode: ModeLog, StderrMode: ModeStream}, []string{Stderr, TTY}},
		{App{StdoutMode: ModeInteractive, StderrMode: ModeNull}, nil},
		// --interactive overrides the annotations, as in rkt.
		{App{Stdin: true, StdinMode: ModeStream, StdoutMode: ModeTTY}, nil},
	}
	for _, c := range cases {
		if got := c.app.Endpoints(); !slices.Equal(got, c.want) {
			t.Errorf("endpoints of %+v = %q, want %q", c.app, got, c.want)
		}
	}
}

func TestStdioModesDefaults(t *testing.T) {
	stdin, stdout, stderr := App{}.StdioModes()
	if stdin != ModeNull || stdout != ModeLog || stderr != ModeLog {
		t.Errorf("default modes = %s %s %s, want null log log", stdin, stdout, stderr)
	}
	stdin, stdout, stderr = App{Stdin: true, StdoutMode: ModeNull}.StdioModes()
	if stdin != ModeInteractive || stdout != ModeLog || stderr != ModeLog {
		t.Errorf("modes with --interactive = %s %s %s, want interactive log log", stdin, stdout, stderr)
	}
}
