package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

func TestHelloOutput(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{busyboxApp(t, "hello", "/bin/sh", "-c", "echo hello")}, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Stdout != "hello\n" {
		t.Errorf("stdout = %q, want %q", res.Stdout, "hello\n")
	}
	if res.Stderr != "" {
		t.Errorf("stderr without --debug = %q, want it empty", res.Stderr)
	}
	if res.Statuses["hello"] != "0" {
		t.Errorf("rkt/status/hello = %q, want 0", res.Statuses["hello"])
	}
	if !res.Ready {
		t.Error("supervisor-status does not point to ready")
	}
}

func TestExitStatusReturned(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{busyboxApp(t, "fail", "/bin/sh", "-c", "exit 3")}, nil)
	if res.ExitCode != 3 {
		t.Errorf("exit status %d, want 3; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Statuses["fail"] != "3" {
		t.Errorf("rkt/status/fail = %q, want 3", res.Statuses["fail"])
	}
}

func TestStdoutAndStderrSeparate(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{busyboxApp(t, "streams", "/bin/sh", "-c", "echo out; echo err >&2")}, nil)
	if res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Errorf("stdout = %q, stderr = %q; want out and err", res.Stdout, res.Stderr)
	}
}

func TestTwoAppsBothRun(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{
		busyboxApp(t, "first", "/bin/sh", "-c", "echo first-ran"),
		busyboxApp(t, "second", "/bin/sh", "-c", "sleep 1; echo second-ran"),
	}, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	for _, want := range []string{"first-ran\n", "second-ran\n"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("stdout %q lacks %q", res.Stdout, want)
		}
	}
	if res.Statuses["first"] != "0" || res.Statuses["second"] != "0" {
		t.Errorf("statuses = %v, want both 0", res.Statuses)
	}
}

func TestFirstFailureStopsPod(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{
		busyboxApp(t, "failing", "/bin/sh", "-c", "sleep 1; exit 4"),
		busyboxApp(t, "long", "/bin/sh", "-c", "sleep 600"),
	}, nil)
	if res.ExitCode != 4 {
		t.Errorf("exit status %d, want 4 from the failing app; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Statuses["failing"] != "4" {
		t.Errorf("rkt/status/failing = %q, want 4", res.Statuses["failing"])
	}
	// The other app is stopped with SIGTERM, which a shell reports as 128+15.
	if res.Statuses["long"] != "143" {
		t.Errorf("rkt/status/long = %q, want 143", res.Statuses["long"])
	}
}

func TestArgsAndEnvByteExact(t *testing.T) {
	d := newDriver(t)
	args := []string{
		"/bin/printargs",
		"with space",
		`double "quotes" and 'single'`,
		"dollar $HOME and %s and \\backslash\\",
		"new\nline\ttab",
		"key=value=more",
		"ütf-8 ☃ 日本",
		"",
		strings.Repeat("x", 10000),
	}
	app := busyboxApp(t, "args", args...)
	app.App.Environment = types.Environment{
		{Name: "SPACES", Value: "a b  c"},
		{Name: "NEWLINE", Value: "line1\nline2"},
		{Name: "EQUALS", Value: "x=y=z"},
		{Name: "QUOTES", Value: `"'$PATH'"`},
		{Name: "EMPTY", Value: ""},
	}
	app.App.WorkingDirectory = "/tmp"
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	var got struct {
		Args []string `json:"args"`
		Env  []string `json:"env"`
		Cwd  string   `json:"cwd"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil {
		t.Fatalf("app output is not JSON: %v\n%s", err, res.Stdout)
	}
	if len(got.Args) != len(args) {
		t.Fatalf("got %d args, want %d: %q", len(got.Args), len(args), got.Args)
	}
	for i := range args {
		if got.Args[i] != args[i] {
			t.Errorf("arg %d = %q, want %q", i, got.Args[i], args[i])
		}
	}
	env := map[string]bool{}
	for _, kv := range got.Env {
		env[kv] = true
	}
	for _, want := range []string{
		"SPACES=a b  c", "NEWLINE=line1\nline2", "EQUALS=x=y=z", `QUOTES="'$PATH'"`, "EMPTY=",
		"AC_APP_NAME=args", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
	} {
		if !env[want] {
			t.Errorf("environment lacks %q: %q", want, got.Env)
		}
	}
	if got.Cwd != "/tmp" {
		t.Errorf("working directory = %q, want /tmp", got.Cwd)
	}
}

func TestMissingExecutableFailsBeforeBoot(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{busyboxApp(t, "broken", "/bin/no-such-program")}, nil)
	if res.ExitCode == 0 {
		t.Fatal("exit status 0, want an error")
	}
	for _, want := range []string{"broken", `"/bin/no-such-program" not found`} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
	if _, ok := res.Statuses["broken"]; ok {
		t.Errorf("a status was recorded for an app that never ran: %v", res.Statuses)
	}
}

func TestInvalidArgumentsRejected(t *testing.T) {
	d := newDriver(t)
	cases := map[string]struct {
		args []string
		want string
	}{
		"unknown flag":  {[]string{"--net=none", "--no-such-flag"}, "no-such-flag"},
		"network":       {[]string{"--net=default:IP=10.1.1.x"}, "10.1.1.x"},
		"private users": {[]string{"--net=none", "--private-users=1:2"}, "--private-users"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			res := run(t, d, []stage0.App{busyboxApp(t, "app", "/bin/true")}, c.args)
			if res.ExitCode != 254 {
				t.Errorf("exit status %d, want 254", res.ExitCode)
			}
			if !strings.Contains(res.Stderr, c.want) {
				t.Errorf("stderr lacks %q:\n%s", c.want, res.Stderr)
			}
		})
	}
}

func TestInvalidEnvironmentRejected(t *testing.T) {
	d := newDriver(t)
	for _, env := range []string{"STAGE1_VM_ACCEL=xen", "STAGE1_VM_BOOT_TIMEOUT=soon"} {
		res, err := d.Run([]stage0.App{busyboxApp(t, "app", "/bin/true")}, stage0.Options{Env: []string{env}})
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(env, "=")
		if res.ExitCode != 254 || !strings.Contains(res.Stderr, name) {
			t.Errorf("%s: exit status %d, stderr %q; want 254 naming %s", env, res.ExitCode, res.Stderr, name)
		}
	}
}

func TestMalformedManifestRejected(t *testing.T) {
	d := newDriver(t)
	res, err := d.Run([]stage0.App{busyboxApp(t, "app", "/bin/true")}, stage0.Options{Env: tcg, Manifest: []byte(`{"acKind":"PodManifest",`)})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 254 || !strings.Contains(res.Stderr, "invalid pod manifest") {
		t.Errorf("exit status %d, stderr %q; want 254 and invalid pod manifest", res.ExitCode, res.Stderr)
	}
}

func TestDebugShowsBoot(t *testing.T) {
	d := newDriver(t)
	res := run(t, d, []stage0.App{busyboxApp(t, "hello", "/bin/true")}, []string{"--net=none", "--debug"})
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	for _, want := range []string{"Linux version", "systemd"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("--debug stderr lacks %q", want)
		}
	}
}

func TestKVMStuckGuestFailsClearly(t *testing.T) {
	d := newDriver(t)
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("/dev/kvm not found")
	}
	res, err := d.Run([]stage0.App{busyboxApp(t, "app", "/bin/true")}, stage0.Options{
		Env: []string{"STAGE1_VM_ACCEL=kvm", "STAGE1_VM_BOOT_TIMEOUT=5"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode == 0 {
		t.Skip("KVM guests boot on this host, so the watchdog has nothing to catch")
	}
	for _, want := range []string{"no sign of life", "KVM", "STAGE1_VM_ACCEL=tcg"} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
}

func TestBootLoop(t *testing.T) {
	d := newDriver(t)
	const boots = 40
	for i := 0; i < boots; i++ {
		res := run(t, d, []stage0.App{busyboxApp(t, "loop", "/bin/sh", "-c", "echo boot-ok")}, nil)
		if res.ExitCode != 0 || res.Stdout != "boot-ok\n" {
			t.Fatalf("boot %d of %d: exit status %d, stdout %q, stderr:\n%s", i+1, boots, res.ExitCode, res.Stdout, res.Stderr)
		}
	}
}

func TestUnrunnableExecutableReported(t *testing.T) {
	d := newDriver(t)
	image := t.TempDir()
	if err := stage0.BusyboxImage(image); err != nil {
		t.Fatal(err)
	}
	// Executable by mode but no program: the host's check passes and
	// execve(2) in the guest fails with ENOEXEC.
	if err := os.WriteFile(filepath.Join(image, "bin/garbage"), []byte("not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	app := stage0.App{Name: "garbage", Image: image, App: types.App{Exec: []string{"/bin/garbage"}, User: "0", Group: "0"}}
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 126 {
		t.Errorf("exit status %d, want 126", res.ExitCode)
	}
	want := "stage1-vm: app garbage: exec /bin/garbage: exec format error\n"
	if res.Stderr != want {
		t.Errorf("stderr = %q, want %q", res.Stderr, want)
	}
}

func TestNetNoneLoopbackOnly(t *testing.T) {
	d := newDriver(t)
	script := `ls /sys/class/net; ifconfig lo | grep -o 'inet addr:127.0.0.1'; ifconfig lo | grep -o UP
nc -l -p 8080 > /tmp/received & sleep 0.5; echo over-loopback | nc 127.0.0.1 8080; sleep 0.5; cat /tmp/received`
	res := run(t, d, []stage0.App{busyboxApp(t, "net", "/bin/sh", "-c", script)}, nil)
	want := "lo\ninet addr:127.0.0.1\nUP\nover-loopback\n"
	if res.Stdout != want {
		t.Errorf("stdout = %q, want %q; stderr:\n%s", res.Stdout, want, res.Stderr)
	}
}
