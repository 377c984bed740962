package enter

import (
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	f, err := ParseFlags([]string{"--pid=42", "--appname=web", "--", "/bin/sh", "-c", "echo --pid=1"})
	if err != nil {
		t.Fatal(err)
	}
	if f.PID != 42 || f.App != "web" {
		t.Errorf("pid %d, app %q; want 42 and web", f.PID, f.App)
	}
	if strings.Join(f.Command, " ") != "/bin/sh -c echo --pid=1" {
		t.Errorf("command = %q", f.Command)
	}

	f, err = ParseFlags([]string{"--pid=42", "--appname=web", "--"})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Command) != 0 {
		t.Errorf("command = %q, want none", f.Command)
	}
}

func TestParseFlagsRejectsInvalid(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--appname=web", "--", "true"}, "--pid"},
		{[]string{"--pid=0", "--appname=web"}, "--pid"},
		{[]string{"--pid=abc", "--appname=web"}, "abc"},
		{[]string{"--pid=42", "--", "true"}, "--appname"},
		{[]string{"--pid=42", "--appname=Not_A_Name"}, "Not_A_Name"},
		{[]string{"--pid=42", "--appname=web", "--bogus"}, "bogus"},
	}
	for _, c := range cases {
		_, err := ParseFlags(c.args)
		if err == nil {
			t.Errorf("ParseFlags(%q) succeeded", c.args)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseFlags(%q) = %v, want it to name %s", c.args, err, c.want)
		}
	}
}

func TestSanitizeReplacesControlCharacters(t *testing.T) {
	if got := Sanitize("bad\x1b[2Japp\x07\n"); got != "bad?[2Japp??" {
		t.Errorf("Sanitize = %q", got)
	}
}
