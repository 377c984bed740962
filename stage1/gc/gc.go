// Package gc holds the gc and stop entrypoints.
package gc

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/stage1/network"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
)

// GC releases what a pod held: a QEMU that outlived its supervisor, its
// networks and the runtime folder. It is safe to run twice and after a crash.
// Arguments: [--debug] --local-config DIR <uuid>; the working directory is
// the pod directory.
func GC(args []string) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	debug := fs.Bool("debug", false, "debug output")
	localConfig := fs.String("local-config", "", "rkt's local configuration folder")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("invalid gc arguments %q: %w", strings.Join(args, " "), err)
	}
	uuid, err := podUUID(fs.Args())
	if err != nil {
		return err
	}
	if err := killQEMU(uuid, unix.SIGKILL); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("pod", uuid)
	// The state that Down reads is in the pod directory, which only the
	// host writes.
	np := network.Pod{Dir: ".", UUID: uuid, LocalConfig: *localConfig, Log: log}
	if err := np.Down(context.Background()); err != nil {
		return fmt.Errorf("release the networks of pod %s: %w", uuid, err)
	}
	if err := os.Remove(network.NetInfoFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s of pod %s: %w", network.NetInfoFile, uuid, err)
	}
	if err := os.RemoveAll(pod.RuntimeDir); err != nil {
		return fmt.Errorf("remove runtime folder of pod %s: %w", uuid, err)
	}
	return nil
}

// Stop makes the pod end. By default it sends the run entrypoint SIGTERM,
// and the run entrypoint asks the guest to stop its apps. With --force it
// sends SIGUSR1, and the run entrypoint kills QEMU at once; without a live
// run entrypoint, --force kills a QEMU left behind.
// Arguments: [--force] <uuid>.
func Stop(args []string) error {
	fs := flag.NewFlagSet("stop", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	force := fs.Bool("force", false, "end the VM at once")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("invalid stop arguments %q: %w", strings.Join(args, " "), err)
	}
	uuid, err := podUUID(fs.Args())
	if err != nil {
		return err
	}
	pid, err := supervisorPID(uuid)
	if err != nil {
		if *force {
			return killQEMU(uuid, unix.SIGKILL)
		}
		return err
	}
	sig := unix.SIGTERM
	if *force {
		sig = unix.SIGUSR1
	}
	if err := unix.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal the run entrypoint of pod %s (pid %d): %w", uuid, pid, err)
	}
	return nil
}

// supervisorPID returns the pid of the pod's run entrypoint from the pid
// file, after checking that the process is the run entrypoint of this pod:
// its last argument is the pod's UUID.
func supervisorPID(uuid string) (int, error) {
	pid, cmdline, err := readPIDFile(pod.PIDFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("pod %s is not running: %w", uuid, err)
	}
	if err != nil {
		return 0, fmt.Errorf("pod %s: %w", uuid, err)
	}
	if !bytes.HasSuffix(cmdline, []byte("\x00"+uuid+"\x00")) {
		return 0, fmt.Errorf("pod %s is not running: its run entrypoint (pid %d) has exited", uuid, pid)
	}
	return pid, nil
}

func podUUID(args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("expected one pod UUID, got %q", args)
	}
	uuid, err := types.NewUUID(args[0])
	if err != nil {
		return "", fmt.Errorf("invalid pod UUID %q: %w", args[0], err)
	}
	return uuid.String(), nil
}

// killQEMU signals the pod's QEMU if it still runs. The pid file alone is
// not trusted: the process must carry the pod's UUID on its command line,
// so a reused pid is never signalled.
func killQEMU(uuid string, sig unix.Signal) error {
	marker := []byte("\x00-uuid\x00" + uuid + "\x00")
	var pids []int
	pid, cmdline, err := readPIDFile(filepath.Join(pod.RuntimeDir, "qemu.pid"))
	switch {
	case err == nil:
		if bytes.Contains(cmdline, marker) {
			pids = append(pids, pid)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		// QEMU creates its pid file before it writes it: a supervisor
		// killed in between leaves it empty. The QEMU of the pod, if any,
		// is then found by its command line.
		if pids, err = processesWith(marker); err != nil {
			return fmt.Errorf("find QEMU of pod %s: %w", uuid, err)
		}
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill QEMU of pod %s (pid %d): %w", uuid, pid, err)
		}
	}
	for _, pid := range pids {
		if !waitGone(pid) {
			return fmt.Errorf("QEMU of pod %s (pid %d) did not exit after %s", uuid, pid, sig)
		}
	}
	return nil
}

// waitGone waits up to 5 s for a process to exit.
func waitGone(pid int) bool {
	for i := 0; i < 100; i++ {
		if unix.Kill(pid, 0) != nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// processesWith returns the processes whose command line contains marker.
func processesWith(marker []byte) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmdline, marker) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// readPIDFile reads a pid file and the command line of its process. The
// command line is empty when the process is gone; the error wraps
// os.ErrNotExist when the file is missing.
func readPIDFile(path string) (int, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, nil, fmt.Errorf("invalid pid file %s: %q", path, data)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid, cmdline, nil
}
