package tests

import (
	"testing"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// TestEventHandlersRunInOrder checks that pre-start runs before the app and
// post-stop after it, both in the app's rootfs, environment and user.
func TestEventHandlersRunInOrder(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "handled", "/bin/sh", "-c", `test -e /dev/shm/pre-ran && echo "main $MARK"; exit 4`)
	app.App.User, app.App.Group = "1000", "1000"
	app.App.Environment = types.Environment{{Name: "MARK", Value: "a b"}}
	app.App.WorkingDirectory = "/tmp"
	app.App.EventHandlers = []types.EventHandler{
		{Name: "pre-start", Exec: []string{"/bin/sh", "-c", `touch /dev/shm/pre-ran && echo "pre-start $(id -u) $(pwd) $MARK"`}},
		{Name: "post-stop", Exec: []string{"/bin/sh", "-c", `echo "post-stop $(id -u) $MARK"`}},
	}
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 4 {
		t.Errorf("exit status %d, want the app's 4; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	want := "pre-start 1000 /tmp a b\nmain a b\npost-stop 1000 a b\n"
	if res.Stdout != want {
		t.Errorf("stdout = %q, want %q", res.Stdout, want)
	}
}

// TestFailingPreStartKeepsAppFromStarting checks that a failing pre-start
// handler gives the app its status, and that post-stop does not run for an
// app whose process never started.
func TestFailingPreStartKeepsAppFromStarting(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "guarded", "/bin/sh", "-c", "echo main-ran")
	app.App.EventHandlers = []types.EventHandler{
		{Name: "pre-start", Exec: []string{"/bin/sh", "-c", "echo checking; exit 7"}},
		{Name: "post-stop", Exec: []string{"/bin/sh", "-c", "echo post-stop-ran"}},
	}
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 7 {
		t.Errorf("exit status %d, want the handler's 7; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Statuses["guarded"] != "7" {
		t.Errorf("rkt/status/guarded = %q, want 7", res.Statuses["guarded"])
	}
	if res.Stdout != "checking\n" {
		t.Errorf("stdout = %q, want the pre-start handler's output only", res.Stdout)
	}
}

// TestPostStopWithMemoryLimit runs a post-stop handler for an app with a
// memory limit, whose limits live in a child of the unit's cgroup: the
// handler and the exit report must still run.
func TestPostStopWithMemoryLimit(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "limited", "/bin/sh", "-c", "echo main")
	app.App.Isolators = types.Isolators{isolator(t, "resource/memory", `{"limit":"64Mi"}`)}
	app.App.EventHandlers = []types.EventHandler{{Name: "post-stop", Exec: []string{"/bin/sh", "-c", "echo post-stop"}}}
	pod, err := d.Start([]stage0.App{app}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pod.Close() })
	// Before the fix the pod never ended, so the wait is bounded.
	wantOutput(t, waitResult(t, pod, 60*time.Second), "main\npost-stop\n")
}
