package pod

import (
	"strings"
	"testing"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

func appWithModes(stdin, stdout, stderr string) schema.RuntimeApp {
	ra := schema.RuntimeApp{Name: "web"}
	for i, v := range []string{stdin, stdout, stderr} {
		if v != "" {
			ra.Annotations.Set(types.ACIdentifier([]string{AnnotationStdin, AnnotationStdout, AnnotationStderr}[i]), v)
		}
	}
	return ra
}

func TestSetStdioModes(t *testing.T) {
	var app guestconfig.App
	if err := SetStdioModes(&app, appWithModes("stream", "tty", "null"), 2); err != nil {
		t.Fatal(err)
	}
	if app.StdinMode != guestconfig.ModeStream || app.StdoutMode != guestconfig.ModeTTY || app.StderrMode != guestconfig.ModeNull || app.Stdin {
		t.Errorf("modes = %+v, want stream, tty, null without --interactive", app)
	}

	app = guestconfig.App{}
	if err := SetStdioModes(&app, appWithModes("interactive", "", ""), 1); err != nil {
		t.Fatal(err)
	}
	if !app.Stdin {
		t.Error("stdin mode interactive did not set Stdin")
	}
}

func TestSetStdioModesRejects(t *testing.T) {
	cases := []struct {
		name string
		ra   schema.RuntimeApp
		apps int
		want string
	}{
		{"log stdin", appWithModes("log", "", ""), 1, `annotation coreos.com/rkt/stage2/stdin: invalid stdin mode "log"`},
		{"unknown stdout", appWithModes("", "journal", ""), 1, `invalid stdout mode "journal"`},
		{"empty-looking stderr", appWithModes("", "", " tty"), 1, `invalid stderr mode " tty"`},
		{"interactive in two apps", appWithModes("interactive", "", ""), 2, "needs a pod of one app; this one has 2"},
	}
	for _, c := range cases {
		var app guestconfig.App
		err := SetStdioModes(&app, c.ra, c.apps)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}
