package gc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/stage1/pod"
)

// TestKillQEMUWithEmptyPIDFile covers a supervisor killed after QEMU
// created its pid file and before it wrote it: gc finds the process by
// its command line.
func TestKillQEMUWithEmptyPIDFile(t *testing.T) {
	const uuid = "6ee58c77-c0fe-4567-82bd-6b08ed314883"
	t.Chdir(t.TempDir())
	if err := os.MkdirAll(pod.RuntimeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pod.RuntimeDir, "qemu.pid"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A stand-in with QEMU's -uuid argument; "; true" keeps the shell from
	// replacing itself with sleep.
	fake := exec.Command("/bin/sh", "-c", "sleep 30; true", "-uuid", uuid)
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fake.Wait() }()

	if err := killQEMU(uuid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fake.Process.Kill()
		t.Fatal("the process with the pod's -uuid was not killed")
	}
	if err := killQEMU(uuid, unix.SIGKILL); err != nil {
		t.Errorf("second run: %v", err)
	}
}
