package report

import "testing"

func TestParseValid(t *testing.T) {
	cases := []struct {
		line string
		want Message
	}{
		{"hello", Message{Kind: Hello}},
		{"ready", Message{Kind: Ready}},
		{"serving", Message{Kind: Serving}},
		{"stopping", Message{Kind: Stopping}},
		{"exit web 3", Message{Kind: Exit, App: "web", Status: 3}},
		{"exit a-1 255", Message{Kind: Exit, App: "a-1", Status: 255}},
		{"pod-exit 0", Message{Kind: PodExit, Status: 0}},
	}
	for _, c := range cases {
		got, err := Parse(c.line)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.line, err)
			continue
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.line, got, c.want)
		}
		if got.String() != c.line {
			t.Errorf("Parse(%q).String() = %q", c.line, got.String())
		}
	}
}

func TestParseRejects(t *testing.T) {
	long := make([]byte, MaxLineLength+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, line := range []string{
		"", "helo", "hello ", "ready now",
		"exit web", "exit web 256", "exit web -1", "exit web 03", "exit web +3",
		"exit ../etc 1", "exit Web 1", "exit web 1 2",
		"pod-exit", "pod-exit x", "pod-exit 1000",
		string(long),
	} {
		if m, err := Parse(line); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", line, m)
		}
	}
}
