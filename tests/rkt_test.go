package tests

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// These tests drive a real rkt binary, named by RKT, so that the contract
// with rkt is checked against rkt itself and not only against the driver.

type rktEnv struct {
	rkt, dataDir, aci, appACI string
}

func requireRkt(t *testing.T) *rktEnv {
	t.Helper()
	aci := requireE2E(t)
	rkt := os.Getenv("RKT")
	if rkt == "" {
		t.Skip("RKT is not set; set RKT=/path/to/rkt (version 1.30.0) to run the tests through a real rkt")
	}
	dataDir, err := os.MkdirTemp("", "s1vm-rkt-")
	if err != nil {
		t.Fatal(err)
	}
	env := &rktEnv{rkt: rkt, dataDir: dataDir, aci: aci, appACI: filepath.Join(dataDir, "busybox.aci")}
	t.Cleanup(func() {
		// gc runs the stage1 gc entrypoint and removes rkt's overlay mounts.
		_, _, _ = env.run(t, "gc", "--grace-period=0s")
		checkNoLeftovers(t, dataDir)
		os.RemoveAll(dataDir)
	})
	if err := stage0.WriteAppACI(testImages(t), "example.com/busybox", []string{"/bin/sh", "-c", "echo hello-from-rkt"}, env.appACI); err != nil {
		t.Fatal(err)
	}
	return env
}

// run runs rkt with the test's data dir and returns stdout, stderr and the exit status.
func (e *rktEnv) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(e.rkt, append([]string{"--dir=" + e.dataDir, "--insecure-options=image,ondisk"}, args...)...)
	cmd.Env = append(os.Environ(), tcg...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return stdout.String(), stderr.String(), exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run rkt: %v", err)
	}
	return stdout.String(), stderr.String(), 0
}

func TestRktRunHello(t *testing.T) {
	e := requireRkt(t)
	stdout, stderr, status := e.run(t, "run", "--net=none", "--stage1-path="+e.aci, e.appACI)
	if status != 0 || !strings.Contains(stdout, "hello-from-rkt\n") {
		t.Errorf("rkt run: status %d, stdout %q, stderr:\n%s", status, stdout, stderr)
	}
}

func TestRktRunExitStatus(t *testing.T) {
	e := requireRkt(t)
	stdout, stderr, status := e.run(t, "run", "--net=none", "--stage1-path="+e.aci, e.appACI,
		"--exec=/bin/sh", "--", "-c", "echo 'quoted \"arg\" with spaces'; exit 3")
	if status != 3 {
		t.Errorf("rkt run: status %d, want 3; stderr:\n%s", status, stderr)
	}
	if !strings.Contains(stdout, "quoted \"arg\" with spaces\n") {
		t.Errorf("stdout = %q", stdout)
	}
	list, _, _ := e.run(t, "list", "--no-legend")
	if !strings.Contains(list, "exited") {
		t.Errorf("rkt list does not show the pod as exited:\n%s", list)
	}
}

func TestRktRunTwoApps(t *testing.T) {
	e := requireRkt(t)
	stdout, stderr, status := e.run(t, "run", "--net=none", "--stage1-path="+e.aci,
		e.appACI, "--name=a", "--exec=/bin/sh", "--", "-c", "echo from-a",
		"---", e.appACI, "--name=b", "--exec=/bin/sh", "--", "-c", "echo from-b")
	if status != 0 {
		t.Fatalf("rkt run: status %d, stderr:\n%s", status, stderr)
	}
	for _, want := range []string{"from-a\n", "from-b\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout %q lacks %q", stdout, want)
		}
	}
}

func TestRktStage1Name(t *testing.T) {
	e := requireRkt(t)
	if _, stderr, status := e.run(t, "fetch", e.aci); status != 0 {
		t.Fatalf("rkt fetch of the stage1 image: status %d, stderr:\n%s", status, stderr)
	}
	stdout, stderr, status := e.run(t, "run", "--net=none", "--stage1-name=stage1-vm/qemu:0.1.0", e.appACI)
	if status != 0 || !strings.Contains(stdout, "hello-from-rkt\n") {
		t.Errorf("rkt run --stage1-name: status %d, stdout %q, stderr:\n%s", status, stdout, stderr)
	}
}

// TestRktVolumesDNSAndLimits passes volumes, mounts, --dns, --hosts-entry
// and resource limits through rkt's own flags.
func TestRktVolumesDNSAndLimits(t *testing.T) {
	e := requireRkt(t)
	rw, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("read-only-input\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `echo written > /data/out
		cat /ro/in
		echo x > /ro/new 2>/dev/null && echo ro-writable || echo ro-denied
		grep nameserver /etc/resolv.conf
		grep db /etc/hosts
		mkdir -p /cg && mount -t cgroup2 none /cg 2>/dev/null; echo "mounted=$?"`
	stdout, stderr, status := e.run(t, "run", "--net=none", "--stage1-path="+e.aci,
		"--volume=data,kind=host,source="+rw, "--volume=ro,kind=host,source="+ro+",readOnly=true",
		"--dns=192.0.2.53", "--hosts-entry=192.0.2.7=db",
		e.appACI, "--mount=volume=data,target=/data", "--mount=volume=ro,target=/ro",
		"--memory=42Mi", "--cpu=500m", "--exec=/bin/sh", "--", "-c", script)
	if status != 0 {
		t.Fatalf("rkt run: status %d, stdout %q, stderr:\n%s", status, stdout, stderr)
	}
	for _, want := range []string{"read-only-input\n", "ro-denied\n", "nameserver 192.0.2.53\n", "192.0.2.7", "mounted=159\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if data, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(data) != "written\n" {
		t.Errorf("the write to the volume did not reach the host: %q, %v", data, err)
	}
}

// TestRktStdinNullStdoutFile runs rkt as a service manager would: stdin
// from /dev/null and stdout to a file. Nothing may hang.
func TestRktStdinNullStdoutFile(t *testing.T) {
	e := requireRkt(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	cmd := exec.Command(e.rkt, "--dir="+e.dataDir, "--insecure-options=image,ondisk", "run", "--net=none", "--stage1-path="+e.aci, e.appACI)
	cmd.Env = append(os.Environ(), tcg...)
	cmd.Stdin, cmd.Stdout = devNull, out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rkt run: %v, stderr:\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "hello-from-rkt\n") {
		t.Errorf("stdout file = %q, want the app's output", data)
	}
}

// TestRktDefaultNetwork runs a pod on rkt's default network, which rkt
// picks without --net, and checks rkt list and gc.
func TestRktDefaultNetwork(t *testing.T) {
	e := requireRkt(t)
	stdout, stderr, status := e.run(t, "run", "--stage1-path="+e.aci, e.appACI,
		"--exec=/bin/sh", "--", "-c", "ip -4 -o addr show dev eth0")
	if status != 0 || !strings.Contains(stdout, "172.16.28.") {
		t.Fatalf("rkt run: status %d, stdout %q, stderr:\n%s", status, stdout, stderr)
	}
	list, _, _ := e.run(t, "list", "--no-legend", "--full")
	if !strings.Contains(list, "default:ip4=172.16.28.") {
		t.Errorf("rkt list does not show the pod's address:\n%s", list)
	}
	fields := strings.Fields(list)
	if len(fields) == 0 {
		t.Fatal("rkt list shows no pod")
	}
	uuid := fields[0]
	if _, stderr, status := e.run(t, "gc", "--grace-period=0s"); status != 0 {
		t.Errorf("rkt gc: status %d, stderr:\n%s", status, stderr)
	}
	if _, err := os.Stat(netnsPath(uuid)); err == nil {
		t.Errorf("the network namespace of pod %s is left after gc", uuid)
	}
}

func TestRktEnterAndStop(t *testing.T) {
	e := requireRkt(t)
	uuidFile := filepath.Join(e.dataDir, "uuid")
	run := exec.Command(e.rkt, "--dir="+e.dataDir, "--insecure-options=image,ondisk", "run", "--net=none",
		"--uuid-file-save="+uuidFile, "--stage1-path="+e.aci, e.appACI, "--exec=/bin/sh", "--",
		"-c", "trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 0.2; done")
	run.Env = append(os.Environ(), tcg...)
	var runOut, runErr bytes.Buffer
	run.Stdout, run.Stderr = &runOut, &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- run.Wait() }()
	runEnded := false
	defer func() {
		if !runEnded {
			run.Process.Kill()
			<-runDone
		}
	}()

	waitForFile(t, uuidFile, 60*time.Second)
	data, err := os.ReadFile(uuidFile)
	if err != nil {
		t.Fatal(err)
	}
	uuid := strings.TrimSpace(string(data))
	if _, stderr, status := e.run(t, "status", "--wait-ready=60s", uuid); status != 0 {
		t.Fatalf("rkt status --wait-ready: status %d, stderr:\n%s", status, stderr)
	}
	statusOut, _, _ := e.run(t, "status", uuid)
	if !strings.Contains(statusOut, "state=running") || !strings.Contains(statusOut, "pid=") {
		t.Errorf("rkt status does not show a running pod with its pid:\n%s", statusOut)
	}

	stdout, stderr, status := e.run(t, "enter", "--app=busybox", uuid, "/bin/sh", "-c", "echo entered-$AC_APP_NAME; exit 4")
	if status != 4 {
		t.Errorf("rkt enter: status %d, want 4; stderr:\n%s", status, stderr)
	}
	if stdout != "entered-busybox\n" {
		t.Errorf("rkt enter: stdout %q, want %q", stdout, "entered-busybox\n")
	}

	// rkt app exec runs the same entrypoint.
	appExec := exec.Command(e.rkt, "--dir="+e.dataDir, "--insecure-options=image,ondisk", "app", "exec", "--app=busybox", uuid, "/bin/sh", "-c", "echo exec-ran; exit 6")
	appExec.Env = append(os.Environ(), append(tcg, "RKT_EXPERIMENT_APP=true")...)
	out, err := appExec.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 6 || !strings.Contains(string(out), "exec-ran\n") {
		t.Errorf("rkt app exec: %v, output %q; want exit status 6 and exec-ran", err, out)
	}

	if _, stderr, status := e.run(t, "stop", uuid); status != 0 {
		t.Fatalf("rkt stop: status %d, stderr:\n%s", status, stderr)
	}
	select {
	case err := <-runDone:
		runEnded = true
		if err != nil {
			t.Errorf("rkt run after rkt stop: %v, want exit 0; stderr:\n%s", err, runErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("rkt run still runs 60 s after rkt stop")
	}
	if !strings.Contains(runOut.String(), "started\n") || !strings.Contains(runOut.String(), "got-sigterm\n") {
		t.Errorf("rkt run stdout %q lacks the app's two lines", runOut.String())
	}
}

// TestRktMutablePod runs the full cycle of rkt's app commands on a pod of
// rkt app sandbox: add, start, stop, rm, and add again.
func TestRktMutablePod(t *testing.T) {
	e := requireRkt(t)
	appEnv := append(append(os.Environ(), tcg...), "RKT_EXPERIMENT_APP=true")
	rkt := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(e.rkt, append([]string{"--dir=" + e.dataDir, "--insecure-options=image,ondisk"}, args...)...)
		cmd.Env = appEnv
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return string(out), exitErr.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	// rkt 1.30.0's app add panics on an image path, so the image goes into
	// the store first.
	if out, status := rkt("fetch", e.appACI); status != 0 {
		t.Fatalf("rkt fetch: status %d:\n%s", status, out)
	}

	uuidFile := filepath.Join(e.dataDir, "uuid")
	sandbox := exec.Command(e.rkt, "--dir="+e.dataDir, "--insecure-options=image,ondisk", "app", "sandbox", "--net=none",
		"--uuid-file-save="+uuidFile, "--stage1-path="+e.aci)
	sandbox.Env = appEnv
	var sandboxOut lockedBuffer
	var sandboxErr bytes.Buffer
	sandbox.Stdout, sandbox.Stderr = &sandboxOut, &sandboxErr
	if err := sandbox.Start(); err != nil {
		t.Fatal(err)
	}
	sandboxDone := make(chan error, 1)
	go func() { sandboxDone <- sandbox.Wait() }()
	ended := false
	defer func() {
		if !ended {
			sandbox.Process.Kill()
			<-sandboxDone
		}
	}()
	waitForFile(t, uuidFile, 60*time.Second)
	data, err := os.ReadFile(uuidFile)
	if err != nil {
		t.Fatal(err)
	}
	uuid := strings.TrimSpace(string(data))
	if out, status := rkt("status", "--wait-ready=60s", uuid); status != 0 {
		t.Fatalf("rkt status --wait-ready: status %d:\n%s", status, out)
	}

	script := `trap 'echo web-got-term; exit 0' TERM; echo web-up; while true; do sleep 0.1; done`
	if out, status := rkt("app", "add", uuid, "example.com/busybox", "--name=web", "--exec=/bin/sh", "--", "-c", script); status != 0 {
		t.Fatalf("rkt app add: status %d:\n%s", status, out)
	}
	if out, _ := rkt("app", "list", "--no-legend", uuid); !strings.Contains(out, "web\tcreated") {
		t.Errorf("rkt app list after add: %q, want web created", out)
	}
	if out, status := rkt("app", "start", uuid, "--app=web"); status != 0 {
		t.Fatalf("rkt app start: status %d:\n%s", status, out)
	}
	sandboxOut.waitFor(t, "web-up\n", 30*time.Second)
	if out, _ := rkt("app", "list", "--no-legend", uuid); !strings.Contains(out, "web\trunning") {
		t.Errorf("rkt app list after start: %q, want web running", out)
	}
	if out, status := rkt("app", "stop", uuid, "--app=web"); status != 0 {
		t.Fatalf("rkt app stop: status %d:\n%s", status, out)
	}
	if out, _ := rkt("app", "list", "--no-legend", uuid); !strings.Contains(out, "web\texited") {
		t.Errorf("rkt app list after stop: %q, want web exited", out)
	}
	if !strings.Contains(sandboxOut.String(), "web-got-term\n") {
		t.Errorf("the stopped app's last line is missing: %q", sandboxOut.String())
	}
	if out, status := rkt("app", "stop", uuid, "--app=web"); status == 0 {
		t.Errorf("rkt app stop of a stopped app succeeded:\n%s", out)
	}
	if out, status := rkt("app", "rm", uuid, "--app=web"); status != 0 {
		t.Fatalf("rkt app rm of the stopped app: status %d:\n%s", status, out)
	}
	if out, status := rkt("app", "add", uuid, "example.com/busybox", "--name=web", "--exec=/bin/sh", "--", "-c", "echo web-again"); status != 0 {
		t.Fatalf("rkt app add of the removed app's name: status %d:\n%s", status, out)
	}
	if out, _ := rkt("app", "list", "--no-legend", uuid); !strings.Contains(out, "web\tcreated") {
		t.Errorf("rkt app list after adding the removed app's name again: %q, want web created", out)
	}
	if out, status := rkt("app", "start", uuid, "--app=web"); status != 0 {
		t.Fatalf("rkt app start: status %d:\n%s", status, out)
	}
	sandboxOut.waitFor(t, "web-again\n", 30*time.Second)

	if out, status := rkt("stop", uuid); status != 0 {
		t.Fatalf("rkt stop: status %d:\n%s", status, out)
	}
	select {
	case err := <-sandboxDone:
		ended = true
		if err != nil {
			t.Errorf("rkt app sandbox after rkt stop: %v, want exit 0; stderr:\n%s", err, sandboxErr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("rkt app sandbox still runs 60 s after rkt stop")
	}
}
