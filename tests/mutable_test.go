package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// startSandbox starts a mutable pod without apps, as rkt app sandbox does,
// and waits until it reports ready.
func startSandbox(t *testing.T, d *stage0.Driver, out *lockedBuffer) *stage0.Pod {
	t.Helper()
	pod, err := d.Start(nil, stage0.Options{Env: tcg, Mutable: true, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pod.Close() })
	waitReady(t, pod)
	return pod
}

// waitFor polls cond until it holds or the limit passes.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readStatus(pod *stage0.Pod, name string) (string, bool) {
	data, err := os.ReadFile(filepath.Join(pod.Dir, "stage1/rootfs/rkt/status", name))
	return string(data), err == nil
}

func TestMutablePodAppCycle(t *testing.T) {
	d := newDriver(t)
	var out lockedBuffer
	pod := startSandbox(t, d, &out)

	trapper := busyboxApp(t, "trapper", "/bin/sh", "-c",
		`trap 'echo trapper-got-term; exit 3' TERM; echo trapper-up; while true; do sleep 0.1; done`)
	if err := pod.AddApp(trapper); err != nil {
		t.Fatal(err)
	}
	if _, ok := readStatus(pod, "trapper-created"); !ok {
		t.Error("no trapper-created status file after app add")
	}
	if err := pod.StartApp("trapper"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "trapper-up\n", 30*time.Second)

	// An app that exits, even with a failure, leaves a mutable pod running.
	quitter := busyboxApp(t, "quitter", "/bin/sh", "-c", "echo quitter-ran; exit 9")
	if err := pod.AddApp(quitter); err != nil {
		t.Fatal(err)
	}
	if err := pod.StartApp("quitter"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the exit status of quitter", 30*time.Second, func() bool { _, ok := readStatus(pod, "quitter"); return ok })
	if status, _ := readStatus(pod, "quitter"); status != "9" {
		t.Errorf("quitter's status file holds %q, want 9", status)
	}
	if pod.Exited() {
		t.Fatal("the mutable pod ended when an app exited")
	}

	res := runEnter(t, pod, "trapper", nil, 30*time.Second, "/bin/sh", "-c", "echo in-$AC_APP_NAME; exit 4")
	if res.status != 4 || res.stdout != "in-trapper\n" {
		t.Errorf("enter into the added app: status %d, stdout %q; want 4 and %q", res.status, res.stdout, "in-trapper\n")
	}

	if status, err := pod.StopApp("trapper"); err != nil || status != 0 {
		t.Fatalf("app stop: status %d, %v", status, err)
	}
	if status, _ := readStatus(pod, "trapper"); status != "3" {
		t.Errorf("trapper's status file holds %q after app stop, want 3", status)
	}
	if !strings.Contains(out.String(), "trapper-got-term\n") {
		t.Errorf("the stopped app's last line is missing from the output %q", out.String())
	}
	if status, _ := pod.StopApp("trapper"); status != 5 {
		t.Errorf("app stop of a stopped app: status %d, want 5", status)
	}

	// Removed, then added again under the same name with another command.
	if err := pod.RemoveApp("trapper"); err != nil {
		t.Fatal(err)
	}
	for _, mark := range []string{"trapper-created", "trapper-started"} {
		if _, ok := readStatus(pod, mark); ok {
			t.Errorf("%s remains after app rm; an app added again would look running", mark)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(pod.Dir, "stage1-vm/apps/rw")); len(entries) != 1 {
		t.Errorf("the apps share holds %d views after app rm, want 1 (quitter)", len(entries))
	}
	again := busyboxApp(t, "trapper", "/bin/sh", "-c", "echo second-trapper; ls /bin/sh")
	if err := pod.AddApp(again); err != nil {
		t.Fatal(err)
	}
	if err := pod.StartApp("trapper"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "second-trapper\n/bin/sh\n", 30*time.Second)
	waitFor(t, "the status of the app added again", 30*time.Second, func() bool { s, _ := readStatus(pod, "trapper"); return s == "0" })

	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	result := waitResult(t, pod, 60*time.Second)
	if result.ExitCode != 0 {
		t.Errorf("the stopped mutable pod exited with %d, want 0; stderr:\n%s", result.ExitCode, result.Stderr)
	}
}

func TestMutablePodRejectsBadApps(t *testing.T) {
	d := newDriver(t)
	var out lockedBuffer
	pod := startSandbox(t, d, &out)

	missing := busyboxApp(t, "missing", "/no/such/program")
	err := pod.AddApp(missing)
	if err == nil || !strings.Contains(err.Error(), "/no/such/program") {
		t.Errorf("adding an app without its executable: %v, want an error naming it", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(pod.Dir, "stage1-vm/apps/rw")); len(entries) != 0 {
		t.Errorf("a failed app add left %d views in the apps share", len(entries))
	}

	huge := busyboxApp(t, "huge", "/bin/true")
	huge.App.Isolators = types.Isolators{isolator(t, "resource/memory", `{"limit":"100Gi"}`)}
	if err := pod.AddApp(huge); err == nil || !strings.Contains(err.Error(), "exceeds the pod VM's") {
		t.Errorf("adding an app with a 100 GiB memory limit: %v, want an error about the VM's RAM", err)
	}

	// rkt keeps an app whose add failed in the pod manifest; it is not
	// running, cannot start, and can be removed.
	if status, _ := pod.StopApp("missing"); status != 5 {
		t.Errorf("app stop of an app whose add failed: status %d, want 5", status)
	}
	if err := pod.StartApp("missing"); err == nil || !strings.Contains(err.Error(), `app "missing" is not in the pod`) {
		t.Errorf("app start of an app whose add failed: %v, want an error naming it", err)
	}
	if _, ok := readStatus(pod, "missing-started"); ok {
		t.Error("a failed app start left the started mark, so rkt shows the app running")
	}
	if err := pod.RemoveApp("missing"); err != nil {
		t.Errorf("app rm of an app whose add failed: %v", err)
	}

	// The pod still takes apps.
	if err := pod.AddApp(busyboxApp(t, "fine", "/bin/sh", "-c", "echo fine-ran")); err != nil {
		t.Fatal(err)
	}
	if err := pod.StartApp("fine"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "fine-ran\n", 30*time.Second)
}

func TestAppCommandsNeedMutablePod(t *testing.T) {
	d := newDriver(t)
	pod := sleeperPod(t, d)
	err := pod.AddApp(busyboxApp(t, "late", "/bin/true"))
	if err == nil || !strings.Contains(err.Error(), "the pod is not mutable") {
		t.Errorf("app add to a pod of rkt run: %v, want an error saying the pod is not mutable", err)
	}
	if _, err := pod.StopApp("sleeper"); err == nil || !strings.Contains(err.Error(), "not mutable") {
		t.Errorf("app stop in a pod of rkt run: %v, want an error saying the pod is not mutable", err)
	}
}
