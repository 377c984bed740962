package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appc/spec/schema/types"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// enterResult is what one run of the enter entrypoint left.
type enterResult struct {
	status         int
	stdout, stderr string
}

// runEnter runs the enter entrypoint with stdin and without a terminal,
// and fails the test if it does not exit within limit.
func runEnter(t *testing.T, pod *stage0.Pod, app string, stdin io.Reader, limit time.Duration, command ...string) enterResult {
	t.Helper()
	cmd, err := pod.EnterCommand(app, command...)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("enter %q did not exit within %s; stdout %q, stderr %q", command, limit, stdout.String(), stderr.String())
	}
	res := enterResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		res.status = exitErr.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return res
}

func sleeperPod(t *testing.T, d *stage0.Driver) *stage0.Pod {
	t.Helper()
	return startPod(t, d, []stage0.App{busyboxApp(t, "sleeper", "/bin/sleep", "600")})
}

func TestEnterExitStatusAndStreams(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	res := runEnter(t, pod, "sleeper", nil, 60*time.Second, "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
	if res.status != 7 {
		t.Errorf("exit status %d, want 7; stderr %q", res.status, res.stderr)
	}
	if res.stdout != "out\n" {
		t.Errorf("stdout = %q, want %q", res.stdout, "out\n")
	}
	if res.stderr != "err\n" {
		t.Errorf("stderr = %q, want %q", res.stderr, "err\n")
	}

	// The pod keeps running after a session, and serves the next one.
	res = runEnter(t, pod, "sleeper", nil, 60*time.Second, "true")
	if res.status != 0 {
		t.Errorf("second session: exit status %d, want 0; stderr %q", res.status, res.stderr)
	}
}

func TestEnterStdinEOFReachesCommand(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	input := strings.Repeat("line of input\n", 50000)
	res := runEnter(t, pod, "sleeper", strings.NewReader(input), 120*time.Second, "/bin/sh", "-c", "cat; echo after-eof")
	if res.status != 0 {
		t.Errorf("exit status %d, stderr %q", res.status, res.stderr)
	}
	if res.stdout != input+"after-eof\n" {
		t.Errorf("stdout has %d bytes, want the %d bytes of input and after-eof", len(res.stdout), len(input))
	}
}

func TestEnterEnvMatchesRun(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "envapp", "/bin/sleep", "600")
	app.App.Environment = types.Environment{
		{Name: "NEWLINE", Value: "line1\nline2"},
		{Name: "SPACES", Value: "a b  c"},
		{Name: "QUOTES", Value: `"'$PATH'"`},
		{Name: "EMPTY", Value: ""},
	}
	app.App.WorkingDirectory = "/tmp"
	pod := startPod(t, d, []stage0.App{app})

	// The app's own environment, as the run entrypoint gave it.
	res := runEnter(t, pod, "envapp", nil, 60*time.Second, "/bin/sh", "-c", "cat /proc/$(pidof sleep)/environ")
	if res.status != 0 {
		t.Fatalf("reading the app's environment: status %d, stderr %q", res.status, res.stderr)
	}
	runEnv := strings.Split(strings.TrimSuffix(res.stdout, "\x00"), "\x00")

	res = runEnter(t, pod, "envapp", nil, 60*time.Second, "printargs", "a b", "new\nline")
	if res.status != 0 {
		t.Fatalf("printargs: status %d, stderr %q", res.status, res.stderr)
	}
	var got struct {
		Args []string `json:"args"`
		Env  []string `json:"env"`
		Cwd  string   `json:"cwd"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("printargs output is not JSON: %v\n%s", err, res.stdout)
	}
	if strings.Join(got.Env, "\x00") != strings.Join(runEnv, "\x00") {
		t.Errorf("environment in enter:\n%q\nwant the app's:\n%q", got.Env, runEnv)
	}
	if !contains(strings.Join(got.Env, "\x00"), "NEWLINE=line1\nline2") {
		t.Errorf("environment in enter lacks NEWLINE with its newline: %q", got.Env)
	}
	wantArgs := []string{"/bin/printargs", "a b", "new\nline"}
	if strings.Join(got.Args, "\x00") != strings.Join(wantArgs, "\x00") {
		t.Errorf("args = %q, want %q", got.Args, wantArgs)
	}
	if got.Cwd != "/tmp" {
		t.Errorf("working directory = %q, want the app's /tmp", got.Cwd)
	}
}

func TestEnterUnknownApp(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	res := runEnter(t, pod, "nosuchapp", nil, 30*time.Second, "true")
	if res.status == 0 {
		t.Error("enter of an unknown app exited 0")
	}
	if !contains(res.stderr, `"nosuchapp"`) {
		t.Errorf("stderr does not name the app: %q", res.stderr)
	}
}

func TestEnterMissingCommand(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	res := runEnter(t, pod, "sleeper", nil, 60*time.Second, "no-such-command")
	if res.status != 127 {
		t.Errorf("exit status %d, want 127; stderr %q", res.status, res.stderr)
	}
	if !contains(res.stderr, "no-such-command") {
		t.Errorf("stderr does not name the command: %q", res.stderr)
	}
}

func TestEnterStoppedPod(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	waitResult(t, pod, 60*time.Second)
	res := runEnter(t, pod, "sleeper", nil, 30*time.Second, "true")
	if res.status == 0 {
		t.Error("enter of a stopped pod exited 0")
	}
	if !contains(res.stderr, "not running") {
		t.Errorf("stderr does not say the pod is not running: %q", res.stderr)
	}
}

func TestEnterBadFlags(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	cmd, err := pod.EnterCommand("sleeper", "true")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Args = []string{cmd.Args[0], "--pid=notanumber", "--appname=sleeper", "--", "true"}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("enter with --pid=notanumber exited 0")
	}
	if !contains(string(out), "notanumber") {
		t.Errorf("output does not name the invalid value: %q", out)
	}
}

// lockedBuffer collects a terminal's output from a reading goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls the buffer until it contains want; the limit only turns a
// hang into a failure.
func (b *lockedBuffer) waitFor(t *testing.T, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal output lacks %q after %s:\n%q", want, limit, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEnterWithTerminal(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)

	terminal, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer terminal.Close()
	defer tty.Close()
	if err := pty.Setsize(terminal, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}

	// The script shows its terminal and size, waits until the new window
	// size arrives, then reads a line typed on the terminal.
	script := `tty; stty size; while [ "$(stty size)" != "40 100" ]; do sleep 0.1; done; echo resized; read line; echo "got $line"; exit 5`
	cmd, err := pod.EnterCommand("sleeper", "/bin/sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var out lockedBuffer
	go io.Copy(&out, terminal)

	out.waitFor(t, "24 80", 60*time.Second)
	if !contains(out.String(), "/dev/pts/") {
		t.Errorf("the command's stdin is not a terminal in the guest:\n%q", out.String())
	}
	// Setsize sends the enter entrypoint SIGWINCH, as a terminal does.
	if err := pty.Setsize(terminal, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "resized", 60*time.Second)
	if _, err := terminal.Write([]byte("typed-line\r")); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "got typed-line", 60*time.Second)

	var exitErr *exec.ExitError
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("enter did not exit; terminal output:\n%q", out.String())
	}
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 5 {
		t.Errorf("enter ended with %v, want exit status 5; terminal output:\n%q", err, out.String())
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Errorf("terminal modes not restored: lflag %#x iflag %#x oflag %#x, were %#x %#x %#x",
			after.Lflag, after.Iflag, after.Oflag, before.Lflag, before.Iflag, before.Oflag)
	}
}

func TestEnterDefaultShell(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	// The busybox image has no /bin/bash, so the default is /bin/sh, which
	// reads its commands from stdin here.
	res := runEnter(t, pod, "sleeper", strings.NewReader("echo from-default-shell; exit 3\n"), 60*time.Second)
	if res.status != 3 {
		t.Errorf("exit status %d, want 3; stderr %q", res.status, res.stderr)
	}
	if res.stdout != "from-default-shell\n" {
		t.Errorf("stdout = %q, want %q", res.stdout, "from-default-shell\n")
	}
}

func TestEnterRunsAsAppUser(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "user", "/bin/sleep", "600")
	app.App.User, app.App.Group = "1234", "2345"
	pod := startPod(t, d, []stage0.App{app})
	res := runEnter(t, pod, "user", nil, 60*time.Second, "/bin/sh", "-c", "id -u; id -g")
	if res.status != 0 {
		t.Fatalf("exit status %d, stderr %q", res.status, res.stderr)
	}
	if res.stdout != "1234\n2345\n" {
		t.Errorf("ids in enter = %q, want the app's 1234 and 2345", res.stdout)
	}
}
