package tests

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// The end-to-end tests boot real VMs: the ACI that `make` built, with its
// QEMU, kernel and systemd, under TCG. They need root for the overlay mounts
// that rkt would make.

var (
	imagesOnce sync.Once
	imagesDir  string
	imagesErr  error
)

// requireE2E skips the test unless it runs as root with a built ACI.
func requireE2E(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("end-to-end tests need root for overlay mounts; run them with sudo make e2e-test")
	}
	aci := os.Getenv("STAGE1_VM_ACI")
	if aci == "" {
		aci, _ = filepath.Abs("../out/stage1-vm.aci")
	}
	if _, err := os.Stat(aci); err != nil {
		t.Skipf("stage1 image not found at %s: run make first, or set STAGE1_VM_ACI", aci)
	}
	return aci
}

// testImages builds the app images once per test binary: busybox and a
// static Go program that prints its arguments and environment.
func testImages(t *testing.T) string {
	t.Helper()
	imagesOnce.Do(func() {
		imagesDir, imagesErr = os.MkdirTemp("", "s1vm-images-")
		if imagesErr != nil {
			return
		}
		dir := filepath.Join(imagesDir, "busybox")
		if imagesErr = stage0.BusyboxImage(dir); imagesErr != nil {
			return
		}
		imagesErr = stage0.GoImage(dir, "./testapps/printargs", "printargs")
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return filepath.Join(imagesDir, "busybox")
}

// newDriver returns a stage0 driver with its own data directory, and checks
// at the end of the test that the pods left no QEMU process and no mount.
func newDriver(t *testing.T) *stage0.Driver {
	t.Helper()
	aci := requireE2E(t)
	dataDir, err := os.MkdirTemp("", "s1vm-")
	if err != nil {
		t.Fatal(err)
	}
	d := &stage0.Driver{ACI: aci, DataDir: dataDir}
	t.Cleanup(func() {
		checkNoLeftovers(t, dataDir)
		os.RemoveAll(dataDir)
	})
	return d
}

// checkNoLeftovers fails the test if a process of this data dir (QEMU, an
// entrypoint) still runs, or a mount or a unix socket under it remains.
func checkNoLeftovers(t *testing.T, dataDir string) {
	t.Helper()
	checkNoProcesses(t, dataDir)
	checkNoSockets(t, dataDir)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mounts, []byte(dataDir)) {
		t.Errorf("mounts under %s remain after the test", dataDir)
	}
}

// busyboxApp returns an app running exec in the busybox image.
func busyboxApp(t *testing.T, name string, exec ...string) stage0.App {
	return stage0.App{
		Name:  name,
		Image: testImages(t),
		App:   types.App{Exec: exec, User: "0", Group: "0"},
	}
}

// tcg makes the pod run under TCG, which every machine here has; KVM guests
// hang on hosts without working nested virtualization.
var tcg = []string{"STAGE1_VM_ACCEL=tcg"}

func run(t *testing.T, d *stage0.Driver, apps []stage0.App, args []string) *stage0.Result {
	t.Helper()
	res, err := d.Run(apps, stage0.Options{Args: args, Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// wantOutput fails the test unless the pod exited with 0 and wrote exactly
// want on stdout.
func wantOutput(t *testing.T, res *stage0.Result, want string) {
	t.Helper()
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Stdout != want {
		t.Errorf("stdout = %q, want %q", shorten(res.Stdout), shorten(want))
	}
}

// shorten keeps a long text readable in a failure message.
func shorten(s string) string {
	const limit = 400
	if len(s) <= limit {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", s[:limit/2], len(s), s[len(s)-limit/2:])
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestMain removes the test images after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

// checkNoProcesses fails the test if a process whose command line contains
// dir still runs.
func checkNoProcesses(t *testing.T, dir string) {
	t.Helper()
	out, _ := exec.Command("pgrep", "-af", "--", dir).Output()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" {
			t.Errorf("process still running: %s", line)
		}
	}
}

// checkNoSockets fails the test if a unix socket remains under dir.
func checkNoSockets(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSocket != 0 {
			t.Errorf("socket remains: %s", path)
		}
		return nil
	})
}
