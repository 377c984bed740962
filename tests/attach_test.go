package tests

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appc/spec/schema/types"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// streamModes returns the annotations that rkt's --stdin, --stdout and
// --stderr write; an empty mode is left out.
func streamModes(stdin, stdout, stderr string) types.Annotations {
	var a types.Annotations
	for i, mode := range []string{stdin, stdout, stderr} {
		if mode != "" {
			a.Set(types.ACIdentifier("coreos.com/rkt/stage2/"+[]string{"stdin", "stdout", "stderr"}[i]), mode)
		}
	}
	return a
}

// attachProcess is a running attach entrypoint whose output the test reads
// while it runs.
type attachProcess struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr lockedBuffer
	done           chan error
}

// startAttach starts the attach entrypoint with pipes, as rkt attach runs
// it, and kills it at the end of the test if it still runs.
func startAttach(t *testing.T, pod *stage0.Pod, args ...string) *attachProcess {
	t.Helper()
	cmd, err := pod.AttachCommand(args...)
	if err != nil {
		t.Fatal(err)
	}
	p := &attachProcess{cmd: cmd, done: make(chan error, 1)}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return p
}

// wait waits for the attach entrypoint to exit and returns its status.
func (p *attachProcess) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			return exitErr.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return 0
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		t.Fatalf("attach %q did not exit within %s; stdout %q, stderr %q", p.cmd.Args[1:], limit, p.stdout.String(), p.stderr.String())
	}
	return 0
}

// runAttach runs the attach entrypoint to its end with the given stdin.
func runAttach(t *testing.T, pod *stage0.Pod, stdin string, args ...string) enterResult {
	t.Helper()
	p := startAttach(t, pod, args...)
	if _, err := io.WriteString(p.stdin, stdin); err != nil {
		t.Fatal(err)
	}
	p.stdin.Close()
	status := p.wait(t, 60*time.Second)
	return enterResult{status: status, stdout: p.stdout.String(), stderr: p.stderr.String()}
}

// customAttach returns rkt's arguments of `rkt attach --mode=...` for the
// given endpoints.
func customAttach(app string, endpoints ...string) []string {
	args := []string{"--action=custom-attach", "--app=" + app, "--debug=false"}
	for _, e := range []string{"tty-in", "tty-out", "stdin", "stdout", "stderr"} {
		set := "false"
		for _, want := range endpoints {
			if want == e {
				set = "true"
			}
		}
		args = append(args, "--"+e+"="+set)
	}
	return args
}

func TestAttachStream(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "echoer", "/bin/sh", "-c", `while read line; do echo "out $line"; echo "err $line" >&2; done; sleep 600`)
	app.Annotations = streamModes("stream", "stream", "stream")
	pod := startPod(t, d, []stage0.App{app})

	res := runAttach(t, pod, "", "--action=list", "--app=echoer", "--debug=false")
	if res.status != 0 || res.stdout != "stdin\nstdout\nstderr\n" {
		t.Errorf("list: status %d, stdout %q, stderr %q; want 0 and the three streams", res.status, res.stdout, res.stderr)
	}

	// auto-attach writes stdin and reads stdout and stderr, and a signal
	// detaches it with status 0.
	first := startAttach(t, pod, "--action=auto-attach", "--app=echoer", "--debug=false")
	if _, err := io.WriteString(first.stdin, "one\n"); err != nil {
		t.Fatal(err)
	}
	first.stdout.waitFor(t, "out one\n", 60*time.Second)
	first.stderr.waitFor(t, "err one\n", 60*time.Second)
	if err := first.cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := first.wait(t, 30*time.Second); status != 0 {
		t.Errorf("detach by SIGTERM: status %d, want 0; stderr %q", status, first.stderr.String())
	}

	// Output while no client reads stdout is dropped: "out two" never
	// reaches the client that attaches stdout after it.
	res = runAttach(t, pod, "two\n", customAttach("echoer", "stdin")...)
	if res.status != 0 {
		t.Errorf("stdin-only attach: status %d, want 0 at the end of its input; stderr %q", res.status, res.stderr)
	}
	reader := startAttach(t, pod, customAttach("echoer", "stdout")...)
	second := startAttach(t, pod, customAttach("echoer", "stdout")...)
	// The readers attach while the writer below runs; a line per second
	// reaches them once they are attached.
	writer := startAttach(t, pod, customAttach("echoer", "stdin")...)
	stopWriting, written := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(written)
		for i := 0; i < 60; i++ {
			if _, err := io.WriteString(writer.stdin, "three\n"); err != nil {
				return
			}
			select {
			case <-stopWriting:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	reader.stdout.waitFor(t, "out three\n", 60*time.Second)
	second.stdout.waitFor(t, "out three\n", 60*time.Second)
	close(stopWriting)
	<-written
	writer.stdin.Close()
	if status := writer.wait(t, 30*time.Second); status != 0 {
		t.Errorf("writer: status %d, want 0; stderr %q", status, writer.stderr.String())
	}
	if contains(reader.stdout.String(), "two") || contains(reader.stdout.String(), "err ") {
		t.Errorf("stdout-only client got output from before it attached or from stderr: %q", reader.stdout.String())
	}
	if err := second.cmd.Process.Signal(unix.SIGINT); err != nil {
		t.Fatal(err)
	}
	if status := second.wait(t, 30*time.Second); status != 0 {
		t.Errorf("detach by SIGINT: status %d, want 0", status)
	}
	if pod.Exited() {
		t.Fatal("the pod ended after its clients detached")
	}

	// The app's exit ends the attached client with status 0.
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	if status := reader.wait(t, 60*time.Second); status != 0 {
		t.Errorf("client attached while the app stopped: status %d, want 0; stderr %q", status, reader.stderr.String())
	}
	waitResult(t, pod, 60*time.Second)
}

// attachTerminal runs auto-attach on a new pseudo-terminal of the given
// size, as from a user's terminal.
type attachTerminal struct {
	*attachProcess
	terminal, tty *os.File
	out           lockedBuffer
	before        *unix.Termios
}

func startAttachTerminal(t *testing.T, pod *stage0.Pod, app string, rows, cols uint16) *attachTerminal {
	t.Helper()
	terminal, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { terminal.Close(); tty.Close() })
	if err := pty.Setsize(terminal, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
	a := &attachTerminal{terminal: terminal, tty: tty}
	if a.before, err = unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	cmd, err := pod.AttachCommand("--action=auto-attach", "--app="+app, "--debug=false")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.attachProcess = &attachProcess{cmd: cmd, done: make(chan error, 1)}
	go func() { a.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	go io.Copy(&a.out, terminal)
	return a
}

// detach types the detach key and checks that attach exits 0 and restores
// the terminal's modes.
func (a *attachTerminal) detach(t *testing.T) {
	t.Helper()
	if _, err := a.terminal.Write([]byte{0x1d}); err != nil {
		t.Fatal(err)
	}
	if status := a.wait(t, 30*time.Second); status != 0 {
		t.Errorf("detach by Ctrl-]: status %d, want 0; terminal output %q", status, a.out.String())
	}
	after, err := unix.IoctlGetTermios(int(a.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != a.before.Lflag || after.Iflag != a.before.Iflag || after.Oflag != a.before.Oflag {
		t.Errorf("terminal modes not restored: lflag %#x iflag %#x oflag %#x, were %#x %#x %#x",
			after.Lflag, after.Iflag, after.Oflag, a.before.Lflag, a.before.Iflag, a.before.Oflag)
	}
}

func TestAttachTerminal(t *testing.T) {
	d := newDriver(t)
	script := `read line; echo "got $line"; tty; stty size
		while [ "$(stty size)" != "40 100" ]; do sleep 0.1; done; echo resized
		read second; echo "second $second"; exec sleep 600`
	app := busyboxApp(t, "shell", "/bin/sh", "-c", script)
	app.Annotations = streamModes("tty", "tty", "tty")
	pod := startPod(t, d, []stage0.App{app})

	res := runAttach(t, pod, "", "--action=list", "--app=shell", "--debug=false")
	if res.status != 0 || res.stdout != "tty\n" {
		t.Errorf("list: status %d, stdout %q, stderr %q; want 0 and tty", res.status, res.stdout, res.stderr)
	}

	first := startAttachTerminal(t, pod, "shell", 30, 90)
	// The first line is typed until the app reads it, because what the app
	// prints before the client attached is dropped.
	deadline := time.Now().Add(60 * time.Second)
	for !contains(first.out.String(), "got hello") && time.Now().Before(deadline) {
		if _, err := first.terminal.Write([]byte("hello\r")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	first.out.waitFor(t, "got hello", time.Second)
	first.out.waitFor(t, "30 90", 30*time.Second)
	if !contains(first.out.String(), "/dev/pts/") {
		t.Errorf("the app's stdin is not a terminal in the guest:\n%q", first.out.String())
	}
	// Setsize sends the attach entrypoint SIGWINCH, as a terminal does.
	if err := pty.Setsize(first.terminal, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
		t.Fatal(err)
	}
	first.out.waitFor(t, "resized", 60*time.Second)
	first.detach(t)

	second := startAttachTerminal(t, pod, "shell", 40, 100)
	deadline = time.Now().Add(60 * time.Second)
	for !contains(second.out.String(), "second again") && time.Now().Before(deadline) {
		if _, err := second.terminal.Write([]byte("again\r")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	second.out.waitFor(t, "second again", time.Second)
	second.detach(t)
	if pod.Exited() {
		t.Fatal("the pod ended after its clients detached")
	}
}

func TestAttachErrors(t *testing.T) {
	d := newDriver(t)
	plain := busyboxApp(t, "plain", "/bin/sleep", "600")
	streamer := busyboxApp(t, "streamer", "/bin/sleep", "600")
	streamer.Annotations = streamModes("", "stream", "null")
	pod := startPod(t, d, []stage0.App{plain, streamer})

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown app", []string{"--action=auto-attach", "--app=nosuchapp"}, `"nosuchapp" is not in the pod`},
		{"no attachable streams", []string{"--action=auto-attach", "--app=plain"}, `app "plain" has no attachable streams`},
		{"list without endpoints", []string{"--action=list", "--app=plain"}, `app "plain" has no attachable streams`},
		{"missing endpoint", customAttach("streamer", "stdin"), `app "streamer" has no stdin endpoint; its endpoints are: stdout`},
		{"unknown action", []string{"--action=bogus", "--app=streamer"}, `invalid --action "bogus"`},
		{"no endpoint", customAttach("streamer"), "custom-attach needs at least one"},
	}
	for _, c := range cases {
		res := runAttach(t, pod, "", c.args...)
		if res.status == 0 {
			t.Errorf("%s: attach exited 0", c.name)
		}
		if !contains(res.stderr, c.want) {
			t.Errorf("%s: stderr %q lacks %q", c.name, res.stderr, c.want)
		}
	}

	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	waitResult(t, pod, 60*time.Second)
	res := runAttach(t, pod, "", "--action=auto-attach", "--app=streamer")
	if res.status == 0 || !contains(res.stderr, "not running") {
		t.Errorf("attach to a stopped pod: status %d, stderr %q; want non-zero and not running", res.status, res.stderr)
	}
}

// TestAttachInvalidMode checks that a stream mode that rkt does not define
// fails the pod before boot with an error that names the app and the value.
func TestAttachInvalidMode(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "badmode", "/bin/true")
	app.Annotations = streamModes("log", "", "")
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 254 {
		t.Errorf("exit status %d, want 254", res.ExitCode)
	}
	if !contains(res.Stderr, "badmode") || !contains(res.Stderr, `invalid stdin mode "log"`) {
		t.Errorf("stderr does not name the app and the value: %q", res.Stderr)
	}
}

// startRktPod runs `rkt run` with the attach experiment and the app
// arguments, waits until the pod is ready and returns its UUID and a
// function that stops it and checks that rkt run exits 0.
func startRktPod(t *testing.T, e *rktEnv, appArgs ...string) (string, func()) {
	t.Helper()
	uuidFile := filepath.Join(t.TempDir(), "uuid")
	args := append([]string{"--dir=" + e.dataDir, "--insecure-options=image,ondisk", "run", "--net=none",
		"--uuid-file-save=" + uuidFile, "--stage1-path=" + e.aci, e.appACI}, appArgs...)
	run := exec.Command(e.rkt, args...)
	run.Env = append(os.Environ(), append(tcg, "RKT_EXPERIMENT_ATTACH=true")...)
	var runErr lockedBuffer
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- run.Wait() }()
	ended := false
	t.Cleanup(func() {
		if !ended {
			run.Process.Kill()
			<-runDone
		}
	})
	waitForFile(t, uuidFile, 60*time.Second)
	data, err := os.ReadFile(uuidFile)
	if err != nil {
		t.Fatal(err)
	}
	uuid := strings.TrimSpace(string(data))
	if _, stderr, status := e.run(t, "status", "--wait-ready=60s", uuid); status != 0 {
		t.Fatalf("rkt status --wait-ready: status %d, stderr:\n%s", status, stderr)
	}
	stop := func() {
		t.Helper()
		if _, stderr, status := e.run(t, "stop", uuid); status != 0 {
			t.Fatalf("rkt stop: status %d, stderr:\n%s", status, stderr)
		}
		select {
		case err := <-runDone:
			ended = true
			// The shell dies of SIGTERM, 128+15.
			var exitErr *exec.ExitError
			if err != nil && (!errors.As(err, &exitErr) || exitErr.ExitCode() != 143) {
				t.Errorf("rkt run after rkt stop: %v; stderr:\n%s", err, runErr.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatal("rkt run still runs 60 s after rkt stop")
		}
	}
	return uuid, stop
}

// rktAttachCommand returns `rkt attach ARGS...` with the attach experiment,
// in a process group of its own, because rkt runs the attach entrypoint as
// its child.
func rktAttachCommand(e *rktEnv, args ...string) *exec.Cmd {
	cmd := exec.Command(e.rkt, append([]string{"--dir=" + e.dataDir, "attach"}, args...)...)
	cmd.Env = append(os.Environ(), "RKT_EXPERIMENT_ATTACH=true")
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	return cmd
}

func TestRktAttachStream(t *testing.T) {
	e := requireRkt(t)
	uuid, stop := startRktPod(t, e, "--stdin=stream", "--stdout=stream", "--stderr=stream",
		"--exec=/bin/sh", "--", "-c", `while read line; do echo "out $line"; echo "err $line" >&2; done; sleep 600`)

	list, err := rktAttachCommand(e, "--mode=list", uuid).CombinedOutput()
	if err != nil || string(list) != "stdin\nstdout\nstderr\n" {
		t.Errorf("rkt attach --mode=list: %v, output %q; want the three streams", err, list)
	}

	for _, mode := range []string{"auto", "stdin,stdout"} {
		cmd := rktAttachCommand(e, "--mode="+mode, uuid)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr lockedBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if _, err := io.WriteString(stdin, mode+"\n"); err != nil {
			t.Fatal(err)
		}
		stdout.waitFor(t, "out "+mode+"\n", 60*time.Second)
		if mode == "auto" {
			stderr.waitFor(t, "err "+mode+"\n", 60*time.Second)
		} else if contains(stderr.String(), "err ") {
			t.Errorf("--mode=%s attached stderr: %q", mode, stderr.String())
		}
		// Ctrl-C on a terminal signals rkt and its attach entrypoint.
		if err := unix.Kill(-cmd.Process.Pid, unix.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
			<-done
			t.Fatalf("rkt attach --mode=%s still runs 30 s after SIGINT", mode)
		}
	}
	stop()
}

func TestRktAttachTerminal(t *testing.T) {
	e := requireRkt(t)
	uuid, stop := startRktPod(t, e, "--stdin=tty", "--stdout=tty", "--stderr=tty",
		"--exec=/bin/sh", "--", "-c", `while read line; do echo "got $line on $(tty), size $(stty size)"; done; sleep 600`)

	terminal, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer terminal.Close()
	defer tty.Close()
	if err := pty.Setsize(terminal, &pty.Winsize{Rows: 33, Cols: 77}); err != nil {
		t.Fatal(err)
	}
	cmd := rktAttachCommand(e, uuid)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var out lockedBuffer
	go io.Copy(&out, terminal)

	deadline := time.Now().Add(60 * time.Second)
	for !contains(out.String(), "got hello on /dev/pts/") && time.Now().Before(deadline) {
		if _, err := terminal.Write([]byte("hello\r")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	out.waitFor(t, "size 33 77", time.Second)
	if _, err := terminal.Write([]byte{0x1d}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("rkt attach after Ctrl-]: %v, want exit 0; terminal output %q", err, out.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("rkt attach still runs 30 s after Ctrl-]; terminal output %q", out.String())
	}
	stop()
}

// TestStreamModesNullAndLog checks the modes without attach: null drops
// the output, and log sends it to the run entrypoint's stdout or stderr.
func TestStreamModesNullAndLog(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "quiet", "/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2")
	app.Annotations = streamModes("null", "null", "log")
	res := run(t, d, []stage0.App{app}, nil)
	wantOutput(t, res, "")
	if !contains(res.Stderr, "to-stderr\n") {
		t.Errorf("stderr in log mode lacks the app's line: %q", res.Stderr)
	}
}
