package tests

import (
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// TestInteractiveStdin passes rkt run's stdin to the app with
// --interactive, byte-exact, and ends the app's input where stdin ends.
func TestInteractiveStdin(t *testing.T) {
	d := newDriver(t)
	input := "first line\nsecond \"line\" with $ and \\\n" + strings.Repeat("x", 100000) + "\n"
	app := busyboxApp(t, "reader", "/bin/sh", "-c", "cat; echo end-of-input")
	res, err := d.Run([]stage0.App{app}, stage0.Options{Env: tcg, Args: []string{"--net=none", "--interactive"}, Stdin: strings.NewReader(input)})
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, res, input+"end-of-input\n")

	// Empty stdin, as from /dev/null: the app reads the end at once.
	res, err = d.Run([]stage0.App{app}, stage0.Options{Env: tcg, Args: []string{"--net=none", "--interactive"}, Stdin: strings.NewReader("")})
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, res, "end-of-input\n")
}

func TestInteractiveNeedsOneApp(t *testing.T) {
	d := newDriver(t)
	apps := []stage0.App{busyboxApp(t, "a", "/bin/true"), busyboxApp(t, "b", "/bin/true")}
	res := run(t, d, apps, []string{"--net=none", "--interactive"})
	if res.ExitCode != 254 || !strings.Contains(res.Stderr, "--interactive needs a pod of one app; this one has 2") {
		t.Errorf("exit status %d, stderr %q; want 254 and the app count", res.ExitCode, res.Stderr)
	}
}

// TestAppStdinIsNullWithoutInteractive checks that an app reads nothing,
// and does not hang, when the pod runs without --interactive.
func TestAppStdinIsNullWithoutInteractive(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "reader", "/bin/sh", "-c", "cat; echo end-of-input")
	res, err := d.Run([]stage0.App{app}, stage0.Options{Env: tcg, Stdin: strings.NewReader("ignored\n")})
	if err != nil {
		t.Fatal(err)
	}
	wantOutput(t, res, "end-of-input\n")
}
