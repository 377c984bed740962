package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often /proc is read for new processes and for QEMU's
// VmHWM. A shorter interval takes CPU time from the VMs under test.
const pollInterval = 10 * time.Millisecond

// entrypoint is one run entrypoint that the driver started, and its QEMU.
type entrypoint struct {
	PID int
	// Exited is when the entrypoint's pidfd reported its exit.
	Exited time.Time
	// QEMUPID is 0 until the watcher found QEMU among the entrypoint's children.
	QEMUPID int
	// QEMUFound is when the watcher found QEMU, up to pollInterval after it started.
	QEMUFound time.Time
	// QEMUPeakKiB is the last VmHWM read from QEMU's /proc status, up to
	// pollInterval before QEMU exited, so it can miss a late rise.
	QEMUPeakKiB uint64
	qemuGone    bool
	exitDone    chan struct{}
}

// watcher follows the run entrypoints that this process starts and their
// QEMU children by reading /proc. It records when each entrypoint exits and
// samples each QEMU's peak RSS.
type watcher struct {
	self     int
	expected int

	mu          sync.Mutex
	entrypoints []*entrypoint
	errs        []error

	stopOnce sync.Once
	stop     chan struct{}
	sampler  sync.WaitGroup
}

// startWatcher starts a watcher that stops scanning for new processes once
// it found the expected number of entrypoints, each with its QEMU.
func startWatcher(expected int) *watcher {
	w := &watcher{self: os.Getpid(), expected: expected, stop: make(chan struct{})}
	w.sampler.Add(1)
	go w.run()
	return w
}

func (w *watcher) run() {
	defer w.sampler.Done()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		w.sample()
		select {
		case <-w.stop:
			return
		case <-ticker.C:
		}
	}
}

// sample finds new entrypoints and QEMUs and reads VmHWM of the running QEMUs.
func (w *watcher) sample() {
	w.mu.Lock()
	complete := len(w.entrypoints) == w.expected
	for _, e := range w.entrypoints {
		complete = complete && e.QEMUPID != 0
	}
	w.mu.Unlock()
	if !complete {
		w.scan()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.entrypoints {
		if e.QEMUPID == 0 || e.qemuGone {
			continue
		}
		// A zombie's status has no VmHWM, so the last value read stays.
		if hwm, err := readVmHWM(e.QEMUPID); err == nil {
			e.QEMUPeakKiB = max(e.QEMUPeakKiB, hwm)
		} else {
			e.qemuGone = true
		}
	}
}

// scan reads the parent of every process in /proc. An entrypoint is a child
// of this process whose argv[0] is the run entrypoint. Its QEMU is its child
// whose argv contains qemu-system-x86_64.
func (w *watcher) scan() {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		w.fail(fmt.Errorf("read /proc: %w", err))
		return
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		ppid, err := readPPID(pid)
		if err != nil {
			continue
		}
		if ppid == w.self && !w.known(pid) && argvZeroIs(pid, "/stage1-vm/host/run") {
			w.addEntrypoint(pid)
			continue
		}
		w.mu.Lock()
		for _, e := range w.entrypoints {
			if e.PID == ppid && e.QEMUPID == 0 && argvContains(pid, "qemu-system-x86_64") {
				e.QEMUPID = pid
				e.QEMUFound = time.Now()
			}
		}
		w.mu.Unlock()
	}
}

func (w *watcher) known(pid int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.entrypoints {
		if e.PID == pid {
			return true
		}
	}
	return false
}

// addEntrypoint opens a pidfd for the entrypoint and records its exit time
// when the pidfd becomes readable, which happens when the process exits,
// before the driver reaps it.
func (w *watcher) addEntrypoint(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		w.fail(fmt.Errorf("pidfd_open of run entrypoint %d: %w", pid, err))
		return
	}
	e := &entrypoint{PID: pid, exitDone: make(chan struct{})}
	w.mu.Lock()
	w.entrypoints = append(w.entrypoints, e)
	w.mu.Unlock()
	go func() {
		defer close(e.exitDone)
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
			if n > 0 {
				w.mu.Lock()
				e.Exited = time.Now()
				w.mu.Unlock()
				return
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				w.fail(fmt.Errorf("poll pidfd of run entrypoint %d: %w", pid, err))
				return
			}
			select {
			case <-w.stop:
				return
			default:
			}
		}
	}()
}

func (w *watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// terminate sends SIGTERM to the entrypoints, which stop their pods
// gracefully as for rkt stop.
func (w *watcher) terminate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.entrypoints {
		if e.Exited.IsZero() {
			_ = syscall.Kill(e.PID, syscall.SIGTERM)
		}
	}
}

// finish waits until every entrypoint seen has exited, stops the watcher
// and returns what it recorded. Call it after the driver's Run returned.
func (w *watcher) finish() ([]*entrypoint, error) {
	w.mu.Lock()
	seen := append([]*entrypoint(nil), w.entrypoints...)
	w.mu.Unlock()
	for _, e := range seen {
		<-e.exitDone
	}
	w.close()

	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		return nil, errors.Join(w.errs...)
	}
	if len(w.entrypoints) != w.expected {
		return nil, fmt.Errorf("found %d run entrypoints in /proc, expected %d", len(w.entrypoints), w.expected)
	}
	for _, e := range w.entrypoints {
		if e.Exited.IsZero() {
			return nil, fmt.Errorf("the exit of run entrypoint %d was not seen", e.PID)
		}
		if e.QEMUPID == 0 || e.QEMUPeakKiB == 0 {
			return nil, fmt.Errorf("found no QEMU process of run entrypoint %d in /proc", e.PID)
		}
	}
	return w.entrypoints, nil
}

// close stops the sampler and the exit pollers. Calling it twice is safe.
func (w *watcher) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	w.sampler.Wait()
}
