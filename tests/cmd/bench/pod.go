package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/stage1/run"
	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// helloOutput is what the hello app prints.
const helloOutput = "hello\n"

// podRun is one measured hello pod. Times are from the call of the
// driver's Run, which mounts the overlays and writes the pod manifest
// before it starts the run entrypoint, as rkt does.
type podRun struct {
	// QEMUFound is when the watcher found QEMU in /proc, up to pollInterval
	// after the run entrypoint started it.
	QEMUFound      time.Duration
	FirstOutput    time.Duration
	EntrypointExit time.Duration
	// Returned includes the gc entrypoint and the unmounts after the pod.
	Returned    time.Duration
	QEMUPeakKiB uint64
}

// concurrentRun is one measurement of several hello pods started at once.
type concurrentRun struct {
	// AllPrinted is when the last pod wrote its first byte.
	AllPrinted time.Duration
	// AllExited is when the last run entrypoint exited.
	AllExited time.Duration
}

// firstWrite records the time of the first byte written to it.
type firstWrite struct {
	mu sync.Mutex
	at time.Time
}

func (f *firstWrite) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.mu.Lock()
		if f.at.IsZero() {
			f.at = time.Now()
		}
		f.mu.Unlock()
	}
	return len(p), nil
}

func (f *firstWrite) firstAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at
}

// pods runs hello pods through the stage0 driver.
type pods struct {
	driver *stage0.Driver
	// image is the busybox app image.
	image string
}

// batch is what runBatch measured: per pod, in the order the pods were
// started, and per run entrypoint, in the order the watcher found them.
// The driver does not say which entrypoint ran which pod.
type batch struct {
	firstOutputs []time.Duration
	returned     []time.Duration
	entrypoints  []*entrypoint
	start        time.Time
}

// runHello runs one hello pod. Cancelling ctx stops it with SIGTERM.
func (p *pods) runHello(ctx context.Context) (podRun, error) {
	b, err := p.runBatch(ctx, 1)
	if err != nil {
		return podRun{}, err
	}
	return podRun{
		QEMUFound:      b.entrypoints[0].QEMUFound.Sub(b.start),
		FirstOutput:    b.firstOutputs[0],
		EntrypointExit: b.entrypoints[0].Exited.Sub(b.start),
		Returned:       b.returned[0],
		QEMUPeakKiB:    b.entrypoints[0].QEMUPeakKiB,
	}, nil
}

// runConcurrent starts n hello pods at once and waits for all of them.
func (p *pods) runConcurrent(ctx context.Context, n int) (concurrentRun, error) {
	b, err := p.runBatch(ctx, n)
	if err != nil {
		return concurrentRun{}, err
	}
	var c concurrentRun
	for _, d := range b.firstOutputs {
		c.AllPrinted = max(c.AllPrinted, d)
	}
	for _, e := range b.entrypoints {
		c.AllExited = max(c.AllExited, e.Exited.Sub(b.start))
	}
	return c, nil
}

// runBatch starts n hello pods in parallel and waits for all of them.
func (p *pods) runBatch(ctx context.Context, n int) (batch, error) {
	w := startWatcher(n)
	defer w.close()
	stopOnCancel := context.AfterFunc(ctx, w.terminate)
	defer stopOnCancel()

	outputs := make([]*firstWrite, n)
	results := make([]*stage0.Result, n)
	errs := make([]error, n)
	returned := make([]time.Time, n)
	b := batch{start: time.Now()}
	var wg sync.WaitGroup
	for i := range n {
		outputs[i] = &firstWrite{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = p.driver.Run([]stage0.App{{
				Name:  "hello",
				Image: p.image,
				App:   types.App{Exec: []string{"/bin/sh", "-c", "echo hello"}, User: "0", Group: "0"},
			}}, stage0.Options{Env: []string{run.EnvAccel + "=tcg"}, Stdout: outputs[i]})
			returned[i] = time.Now()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return b, err
	}
	for i := range n {
		if errs[i] != nil {
			return b, fmt.Errorf("run hello pod: %w", errs[i])
		}
		if err := checkHello(results[i]); err != nil {
			return b, err
		}
		b.firstOutputs = append(b.firstOutputs, outputs[i].firstAt().Sub(b.start))
		b.returned = append(b.returned, returned[i].Sub(b.start))
	}
	entrypoints, err := w.finish()
	if err != nil {
		return b, err
	}
	b.entrypoints = entrypoints
	return b, checkQEMUGone(entrypoints)
}

// checkHello checks that a pod printed hello and exited with status 0.
func checkHello(res *stage0.Result) error {
	if res.ExitCode != 0 {
		return fmt.Errorf("hello pod %s exited with status %d; stderr:\n%s", res.UUID, res.ExitCode, res.Stderr)
	}
	if res.Stdout != helloOutput {
		return fmt.Errorf("hello pod %s printed %q, expected %q; stderr:\n%s", res.UUID, res.Stdout, helloOutput, res.Stderr)
	}
	return nil
}

// checkQEMUGone kills and reports a pod's QEMU that outlived its run
// entrypoint, which must wait for QEMU on every path.
func checkQEMUGone(entrypoints []*entrypoint) error {
	var errs []error
	for _, e := range entrypoints {
		if argvContains(e.QEMUPID, "qemu-system-x86_64") {
			_ = syscall.Kill(e.QEMUPID, syscall.SIGKILL)
			errs = append(errs, fmt.Errorf("QEMU process %d outlived its run entrypoint %d; killed it", e.QEMUPID, e.PID))
		}
	}
	return errors.Join(errs...)
}
