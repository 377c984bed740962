package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// These tests crash a pod on purpose, then run gc as rkt would and check
// that nothing of the pod remains: no process, no socket, no runtime
// folder. The driver's cleanup then checks the mounts.

// checkGCLeavesNothing runs gc twice on a crashed pod and checks what remains.
func checkGCLeavesNothing(t *testing.T, pod *stage0.Pod) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		if err := pod.GC(); err != nil {
			t.Errorf("gc run %d after the crash: %v", i, err)
		}
	}
	if _, err := os.Stat(filepath.Join(pod.Dir, "stage1-vm")); !os.IsNotExist(err) {
		t.Errorf("the runtime folder remains after gc: %v", err)
	}
	checkNoProcesses(t, pod.Dir)
	checkNoSockets(t, pod.Dir)
}

// waitForFile waits until path exists; the limit only turns a hang into a
// failure.
func waitForFile(t *testing.T, path string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not exist after %s", path, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startBooting starts a pod and returns as soon as QEMU has written its
// pid file, while the guest boots.
func startBooting(t *testing.T, d *stage0.Driver) *stage0.Pod {
	t.Helper()
	pod, err := d.Start([]stage0.App{busyboxApp(t, "sleeper", "/bin/sleep", "600")}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pod.Close() })
	waitForFile(t, filepath.Join(pod.Dir, "stage1-vm/qemu.pid"), 30*time.Second)
	return pod
}

func TestGCAfterSupervisorKilledMidBoot(t *testing.T) {
	d := newDriver(t)
	pod := startBooting(t, d)
	if pod.Ready() {
		t.Log("the pod was ready before the kill; the case ran as a mid-run crash")
	}
	if err := pod.Process().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitResult(t, pod, 10*time.Second)
	checkGCLeavesNothing(t, pod)
}

func TestGCAfterQEMUKilledMidBoot(t *testing.T) {
	d := newDriver(t)
	pod := startBooting(t, d)
	if err := syscall.Kill(qemuPID(t, pod), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 30*time.Second)
	if res.ExitCode == 0 {
		t.Error("the pod exited 0 after its QEMU was killed")
	}
	checkGCLeavesNothing(t, pod)
}

func TestGCAfterSupervisorKilledMidRun(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	if err := pod.Process().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitResult(t, pod, 10*time.Second)
	checkGCLeavesNothing(t, pod)
}

func TestGCAfterQEMUKilledMidRun(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	if err := syscall.Kill(qemuPID(t, pod), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, pod, 30*time.Second)
	if res.ExitCode != 254 {
		t.Errorf("exit status %d after QEMU was killed, want 254", res.ExitCode)
	}
	checkGCLeavesNothing(t, pod)
}

func TestEnterEndsWhenPodIsKilled(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	cmd, err := pod.EnterCommand("sleeper", "/bin/sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The session is open once the agent runs its command.
	deadline := time.Now().Add(60 * time.Second)
	for !enteredCommandRuns(t, pod) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the entered command did not start within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := syscall.Kill(qemuPID(t, pod), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("enter exited 0 after its pod was killed")
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("enter still runs 30 s after its pod was killed")
	}
	waitResult(t, pod, 30*time.Second)
	checkGCLeavesNothing(t, pod)
}

// enteredCommandRuns reports whether a second sleep runs in the guest
// besides the app's, found through a second enter session.
func enteredCommandRuns(t *testing.T, pod *stage0.Pod) bool {
	t.Helper()
	res := runEnter(t, pod, "sleeper", nil, 60*time.Second, "/bin/sh", "-c", "pidof sleep")
	return res.status == 0 && len(strings.Fields(res.stdout)) >= 2
}
