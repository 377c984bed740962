package attach

import (
	"slices"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	f, err := ParseFlags([]string{"--action=custom-attach", "--tty-in=false", "--tty-out=false",
		"--stdin=true", "--stdout=false", "--stderr=true", "--app=web", "--debug=true"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Action != ActionCustom || f.App != "web" || !f.Debug {
		t.Errorf("flags = %+v", f)
	}
	if !slices.Equal(f.Endpoints, []string{"stdin", "stderr"}) {
		t.Errorf("endpoints = %q, want stdin and stderr", f.Endpoints)
	}

	f, err = ParseFlags([]string{"--action=list", "--app=web", "--debug=false"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Action != ActionList || f.Debug || len(f.Endpoints) != 0 {
		t.Errorf("flags = %+v", f)
	}
}

func TestParseFlagsRejectsInvalid(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--app=web"}, "missing --action"},
		{[]string{"--action=attach", "--app=web"}, `invalid --action "attach"`},
		{[]string{"--action=list"}, "missing --app"},
		{[]string{"--action=list", "--app=Web_1"}, `invalid --app "Web_1"`},
		{[]string{"--action=custom-attach", "--app=web", "--stdin=false"}, "needs at least one"},
		{[]string{"--action=auto-attach", "--app=web", "--stdout=true"}, "takes no endpoints"},
		{[]string{"--action=list", "--app=web", "--stdin=maybe"}, "maybe"},
		{[]string{"--action=list", "--app=web", "extra"}, `unexpected attach arguments ["extra"]`},
	}
	for _, c := range cases {
		_, err := ParseFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}

func TestSelect(t *testing.T) {
	auto := &Flags{Action: ActionAuto, App: "web"}
	got, err := Select(auto, []string{"stdout", "tty"})
	if err != nil || !slices.Equal(got, []string{"stdout", "tty-in", "tty-out"}) {
		t.Errorf("auto-attach = %q, %v; want stdout, tty-in and tty-out", got, err)
	}

	custom := &Flags{Action: ActionCustom, App: "web", Endpoints: []string{"tty-out"}}
	got, err = Select(custom, []string{"tty"})
	if err != nil || !slices.Equal(got, []string{"tty-out"}) {
		t.Errorf("custom-attach tty-out = %q, %v", got, err)
	}

	custom.Endpoints = []string{"stdin", "stdout"}
	_, err = Select(custom, []string{"stdout", "stderr"})
	if err == nil || !strings.Contains(err.Error(), `app "web" has no stdin endpoint; its endpoints are: stdout, stderr`) {
		t.Errorf("custom-attach of a missing endpoint: error %v", err)
	}
}
