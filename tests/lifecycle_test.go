package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// startPod starts a pod and waits until it reports ready.
func startPod(t *testing.T, d *stage0.Driver, apps []stage0.App) *stage0.Pod {
	t.Helper()
	return startPodEnv(t, d, apps, nil)
}

// startPodEnv starts a pod with extra environment variables for the run
// entrypoint and waits until it reports ready.
func startPodEnv(t *testing.T, d *stage0.Driver, apps []stage0.App, env []string) *stage0.Pod {
	t.Helper()
	pod, err := d.Start(apps, stage0.Options{Env: append(append([]string{}, tcg...), env...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pod.Close() })
	waitReady(t, pod)
	return pod
}

// waitReady waits until the pod reports ready, and fails the test if it
// exits first or takes more than 60 s.
func waitReady(t *testing.T, pod *stage0.Pod) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !pod.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("pod did not report ready within 60 s")
		}
		if pod.Exited() && !pod.Ready() {
			t.Fatal("pod exited before it reported ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitResult waits for the run entrypoint with a limit, so that a pod that
// never ends fails the test instead of hanging it.
func waitResult(t *testing.T, pod *stage0.Pod, limit time.Duration) *stage0.Result {
	t.Helper()
	type outcome struct {
		res *stage0.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := pod.Wait()
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		return o.res
	case <-time.After(limit):
		pod.Process().Kill()
		t.Fatalf("the run entrypoint did not exit within %s", limit)
	}
	return nil
}

func TestStopGraceful(t *testing.T) {
	d := newDriver(t)
	pod := startPod(t, d, []stage0.App{busyboxApp(t, "trapper", "/bin/sh", "-c",
		"trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 0.2; done")})
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 60*time.Second)
	if res.ExitCode != 0 {
		t.Errorf("exit status %d, want 0; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Stdout != "started\ngot-sigterm\n" {
		t.Errorf("stdout = %q, want both lines of the app", res.Stdout)
	}
	if res.Statuses["trapper"] != "0" {
		t.Errorf("rkt/status/trapper = %q, want 0", res.Statuses["trapper"])
	}
}

// TestStopManyApps stops a pod of 20 apps. Each app has a few dozen
// mounts in the guest, which a reboot unmounts one by one. The apps must
// not wait for that, because the stop would run out of time and lose the
// statuses.
func TestStopManyApps(t *testing.T) {
	d := newDriver(t)
	var apps []stage0.App
	for i := 0; i < 20; i++ {
		apps = append(apps, busyboxApp(t, fmt.Sprintf("app%d", i), "/bin/sh", "-c",
			"trap 'exit 0' TERM; sleep 1000 & wait"))
	}
	pod := startPodEnv(t, d, apps, []string{"STAGE1_VM_BOOT_TIMEOUT=120"})
	start := time.Now()
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 60*time.Second)
	t.Logf("20 apps stopped in %s", time.Since(start).Round(100*time.Millisecond))
	if res.ExitCode != 0 {
		t.Errorf("exit status %d, want 0; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	for _, app := range apps {
		if res.Statuses[app.Name] != "0" {
			t.Errorf("rkt/status/%s = %q, want 0", app.Name, res.Statuses[app.Name])
		}
	}
}

func TestStopGracePeriodEndsInKill(t *testing.T) {
	d := newDriver(t)
	pod := startPodEnv(t, d, []stage0.App{busyboxApp(t, "ignorer", "/bin/sh", "-c",
		"trap 'echo ignored-sigterm' TERM; echo started; while true; do sleep 0.2; done")},
		[]string{"STAGE1_VM_STOP_TIMEOUT=2"})
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 60*time.Second)
	// SIGKILL after the grace period: 128 + 9.
	if res.ExitCode != 137 {
		t.Errorf("exit status %d, want 137; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Statuses["ignorer"] != "137" {
		t.Errorf("rkt/status/ignorer = %q, want 137", res.Statuses["ignorer"])
	}
	if !strings.Contains(res.Stdout, "ignored-sigterm\n") {
		t.Errorf("stdout %q lacks the app's SIGTERM handler output", res.Stdout)
	}
}

func TestStopForce(t *testing.T) {
	d := newDriver(t)
	pod := startPod(t, d, []stage0.App{busyboxApp(t, "sleeper", "/bin/sh", "-c", "sleep 600")})
	if err := pod.Stop(true); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 30*time.Second)
	if res.ExitCode != 137 {
		t.Errorf("exit status %d after a forced stop, want 137; stderr:\n%s", res.ExitCode, res.Stderr)
	}
}

func qemuPID(t *testing.T, pod *stage0.Pod) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pod.Dir, "stage1-vm/qemu.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func processGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func TestKilledSupervisorTakesQEMU(t *testing.T) {
	d := newDriver(t)
	pod := startPod(t, d, []stage0.App{busyboxApp(t, "sleeper", "/bin/sh", "-c", "sleep 600")})
	qemu := qemuPID(t, pod)
	if err := pod.Process().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitResult(t, pod, 10*time.Second)
	if !processGone(qemu, 10*time.Second) {
		t.Errorf("QEMU (pid %d) still runs 10 s after its supervisor was killed", qemu)
	}
	// gc must cope with the runtime folder the killed supervisor left.
	if err := pod.Close(); err != nil {
		t.Errorf("gc after a crash: %v", err)
	}
	if err := pod.Close(); err != nil {
		t.Errorf("second gc: %v", err)
	}
}

func TestKilledQEMUFailsPod(t *testing.T) {
	d := newDriver(t)
	pod := startPod(t, d, []stage0.App{busyboxApp(t, "sleeper", "/bin/sh", "-c", "sleep 600")})
	if err := syscall.Kill(qemuPID(t, pod), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 30*time.Second)
	if res.ExitCode != 254 {
		t.Errorf("exit status %d, want 254", res.ExitCode)
	}
	if !strings.Contains(res.Stderr, "QEMU failed") {
		t.Errorf("stderr does not say QEMU failed:\n%s", res.Stderr)
	}
}

func TestAppWritesReachHost(t *testing.T) {
	d := newDriver(t)
	pod, err := d.Start([]stage0.App{busyboxApp(t, "writer", "/bin/sh", "-c",
		"seq 1 100000 > /written; echo last-line >> /written")}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	res := waitResult(t, pod, 60*time.Second)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	// The VM is ended as soon as the guest reports the pod's status, so the
	// guest must have flushed the app's writes by then.
	data, err := os.ReadFile(filepath.Join(pod.Dir, "stage1/rootfs/opt/stage2/writer/rootfs/written"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 100001 || lines[99999] != "100000" || lines[100000] != "last-line" {
		t.Errorf("file written in the guest has %d lines, want 100001 ending in last-line", len(lines))
	}
}

func TestStopDuringBoot(t *testing.T) {
	d := newDriver(t)
	pod, err := d.Start([]stage0.App{busyboxApp(t, "sleeper", "/bin/sh", "-c", "sleep 600")}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	// rkt stop finds the pod through its pid file, which the run entrypoint
	// writes before it starts QEMU.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(pod.Dir, "pid")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pid file within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 60*time.Second)
	// The stop lands before or after the app started: either nothing ran
	// (0) or the app ended on SIGTERM (143). A lost stop would end in the
	// stop timeout's kill instead.
	if res.ExitCode != 0 && res.ExitCode != 143 {
		t.Errorf("exit status %d, want 0 or 143; stderr:\n%s", res.ExitCode, res.Stderr)
	}
}

func TestInterruptStopsGracefully(t *testing.T) {
	d := newDriver(t)
	pod := startPod(t, d, []stage0.App{busyboxApp(t, "trapper", "/bin/sh", "-c",
		"trap 'echo got-sigint-stop; exit 6' TERM; echo started; while true; do sleep 0.2; done")})
	// A terminal's Ctrl-C reaches the whole process group; QEMU runs in its
	// own, so only the run entrypoint gets it and stops the apps.
	if err := syscall.Kill(pod.Process().Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 60*time.Second)
	if res.ExitCode != 6 {
		t.Errorf("exit status %d, want the app's 6; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "got-sigint-stop\n") {
		t.Errorf("stdout %q lacks the app's SIGTERM handler output", res.Stdout)
	}
}

func TestAgentDeathEndsPod(t *testing.T) {
	d := newDriver(t)
	pod, err := d.Start([]stage0.App{busyboxApp(t, "killer", "/bin/sh", "-c",
		"kill -9 $(pidof stage1-vm-init); sleep 600")},
		stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	res := waitResult(t, pod, 90*time.Second)
	if res.ExitCode != 254 {
		t.Errorf("exit status %d, want 254 after the guest agent died; stderr:\n%s", res.ExitCode, res.Stderr)
	}
}

func TestStopFallsBackToPowerButton(t *testing.T) {
	d := newDriver(t)
	pod := startPodEnv(t, d, []stage0.App{busyboxApp(t, "trapper", "/bin/sh", "-c",
		"trap 'exit 0' TERM; while true; do sleep 0.2; done")},
		[]string{"STAGE1_VM_STOP_TIMEOUT=2"})
	// Freeze the guest agent from an enter session, in the background so
	// that the session ends first. The marker file shows the host that the
	// agent is frozen; 9p sends a file's creation to the host at once.
	freeze := `agent=; for p in /proc/[0-9]*; do
		if [ "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" = "/stage1-vm/bin/stage1-vm-init agent " ]; then agent=${p#/proc/}; fi
	done
	[ -n "$agent" ] || { echo "agent not found" >&2; exit 1; }
	(sleep 1; kill -STOP $agent; touch /agent-frozen) >/dev/null 2>&1 &`
	res := runEnter(t, pod, "trapper", nil, 60*time.Second, "/bin/sh", "-c", freeze)
	if res.status != 0 {
		t.Fatalf("freezing the agent: status %d, stderr %q", res.status, res.stderr)
	}
	waitForFile(t, filepath.Join(pod.Dir, "stage1/rootfs/opt/stage2/trapper/rootfs/agent-frozen"), 30*time.Second)

	// A session opened now waits for the frozen agent, and must end with
	// the pod instead of holding the run entrypoint.
	waiting, err := pod.EnterCommand("trapper", "true")
	if err != nil {
		t.Fatal(err)
	}
	if err := waiting.Start(); err != nil {
		t.Fatal(err)
	}
	sessionDone := make(chan error, 1)
	go func() { sessionDone <- waiting.Wait() }()

	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	result := waitResult(t, pod, 90*time.Second)
	select {
	case err := <-sessionDone:
		if err == nil {
			t.Error("the enter session on the frozen agent exited 0")
		}
	case <-time.After(30 * time.Second):
		waiting.Process.Kill()
		t.Error("the enter session on the frozen agent still runs 30 s after the pod ended")
	}
	if !strings.Contains(result.Stderr, "ACPI power button") {
		t.Errorf("stderr does not report the power-button fallback:\n%s", result.Stderr)
	}
	// Without a working fallback the stop ends in the stop timeout's kill.
	if strings.Contains(result.Stderr, "the VM was killed") {
		t.Errorf("the stop ended in a kill of the VM, not in the guest's shutdown:\n%s", result.Stderr)
	}
}
