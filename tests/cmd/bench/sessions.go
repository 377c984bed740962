package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/stage1/run"
	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// sessionRun is one measurement of enter and stop on running pods.
type sessionRun struct {
	// Enter is from starting the enter entrypoint with `true` to its exit.
	Enter time.Duration
	// Stop is from starting the stop entrypoint to the run entrypoint's
	// exit, for an app that exits on SIGTERM.
	Stop time.Duration
	// ForceStop is the same with stop --force.
	ForceStop time.Duration
}

// trapperExec exits 0 on SIGTERM and sleeps otherwise.
var trapperExec = []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"}

// runSessions measures enter and a graceful stop on one pod, and a forced
// stop on a second one.
func (p *pods) runSessions(ctx context.Context) (sessionRun, error) {
	var r sessionRun
	pod, err := p.startReady(ctx)
	if err != nil {
		return r, err
	}
	defer pod.Close()
	cmd, err := pod.EnterCommand("trapper", "true")
	if err != nil {
		return r, err
	}
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return r, fmt.Errorf("enter pod %s: %w: %s", pod.UUID, err, out)
	}
	r.Enter = time.Since(start)
	if r.Stop, err = stopAndWait(pod, false); err != nil {
		return r, err
	}

	forced, err := p.startReady(ctx)
	if err != nil {
		return r, err
	}
	defer forced.Close()
	r.ForceStop, err = stopAndWait(forced, true)
	return r, err
}

// startReady starts a pod with the trapper app and waits until it reports
// ready.
func (p *pods) startReady(ctx context.Context) (*stage0.Pod, error) {
	pod, err := p.driver.Start([]stage0.App{{
		Name:  "trapper",
		Image: p.image,
		App:   types.App{Exec: trapperExec, User: "0", Group: "0"},
	}}, stage0.Options{Env: []string{run.EnvAccel + "=tcg"}})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for !pod.Ready() {
		if err := ctx.Err(); err != nil {
			pod.Close()
			return nil, err
		}
		if time.Now().After(deadline) {
			pod.Close()
			return nil, fmt.Errorf("pod %s did not report ready within 60 s", pod.UUID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return pod, nil
}

// stopAndWait runs the stop entrypoint and returns the time until the run
// entrypoint exited.
func stopAndWait(pod *stage0.Pod, force bool) (time.Duration, error) {
	args := []string{pod.UUID}
	if force {
		args = []string{"--force", pod.UUID}
	}
	stop := exec.Command(filepath.Join(pod.Dir, "stage1/rootfs/stage1-vm/host/stop"), args...)
	stop.Dir = pod.Dir
	start := time.Now()
	if out, err := stop.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("stop pod %s: %w: %s", pod.UUID, err, out)
	}
	res, err := pod.Wait()
	if err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	want := 0
	if force {
		want = run.ForcedStopExitStatus
	}
	if res.ExitCode != want {
		return 0, fmt.Errorf("pod %s exited with status %d after stop (force %v), expected %d; stderr:\n%s", pod.UUID, res.ExitCode, force, want, res.Stderr)
	}
	return elapsed, nil
}
