package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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

// scan reads the parent of every process in /proc. A child of this process
// whose argv[0] is the run entrypoint is an entrypoint; a child of an
// entrypoint whose argv contains qemu-system-x86_64 is its QEMU.
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
		if e.QEMUPID == 0 || e.QEMUPeakKiB == 0 {
			return nil, fmt.Errorf("found no QEMU process of run entrypoint %d in /proc", e.PID)
		}
	}
	return w.entrypoints, nil
}

// close stops the sampler and the exit pollers; it is safe to call twice.
func (w *watcher) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	w.sampler.Wait()
}

func readPPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in brackets can contain spaces and brackets, so the
	// fields are counted from the last ')': state, then the parent's pid.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("invalid /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 2 {
		return 0, fmt.Errorf("invalid /proc/%d/stat: too few fields", pid)
	}
	return strconv.Atoi(fields[1])
}

func readArgv(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

func argvZeroIs(pid int, suffix string) bool {
	argv := readArgv(pid)
	return len(argv) > 0 && strings.HasSuffix(argv[0], suffix)
}

func argvContains(pid int, substr string) bool {
	for _, arg := range readArgv(pid) {
		if strings.Contains(arg, substr) {
			return true
		}
	}
	return false
}

// readVmHWM returns a process's peak resident set size in KiB.
func readVmHWM(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if value, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
