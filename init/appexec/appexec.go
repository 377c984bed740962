// Package appexec runs inside an app's systemd unit: Exec enters the app's
// rootfs and execs the app, Exited reports the app's exit status.
package appexec

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/init/ports"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/seccomp"
)

// Exit statuses of Exec when the app cannot start, as a shell reports them.
const (
	StatusCannotExecute = 126
	StatusNotFound      = 127
)

func loadApp(name string) (guestconfig.App, error) {
	_, app, err := guestconfig.LoadApp(name)
	return app, err
}

// Exec replaces the process with the app. On failure it writes the error to
// stderr, which is the app's stderr once that stream is set up and the
// kernel log before, and returns the exit status to use.
func Exec(name string) int {
	status, err := execApp(name)
	fmt.Fprintf(os.Stderr, "stage1-vm: app %s: %v\n", name, err)
	return status
}

func execApp(name string) (int, error) {
	app, err := loadApp(name)
	if err != nil {
		return 1, err
	}
	if err := connectStdio(app, true); err != nil {
		return 1, err
	}
	return enterAndExec(app, app.Exec, true)
}

// Enter replaces the process with command, run in the app's rootfs, with
// its uid and gids, environment and working directory, as rkt enter does:
// without the app's cgroup limits, bounding set or seccomp filter. A
// command without a slash is looked up in the PATH of the app's
// environment. An empty command runs /bin/bash, or /bin/sh where the image
// has no /bin/bash. TERM from this process's environment is added when the
// app's environment has none. On failure Enter writes the error to stderr
// and returns the exit status to use.
func Enter(name string, command []string) int {
	status, err := enterApp(name, command)
	fmt.Fprintf(os.Stderr, "stage1-vm: enter app %s: %v\n", name, err)
	return status
}

func enterApp(name string, command []string) (int, error) {
	app, err := loadApp(name)
	if err != nil {
		return 1, err
	}
	if term := os.Getenv("TERM"); term != "" && !hasVariable(app.Env, "TERM") {
		app.Env = append(app.Env, "TERM="+term)
	}
	runtime.LockOSThread()
	if err := enter(app, false); err != nil {
		return 1, err
	}
	argv, err := resolveCommand(command, app.Env)
	if err != nil {
		return StatusNotFound, err
	}
	return execStatus(argv[0], unix.Exec(argv[0], argv, app.Env))
}

// execStatus returns the shell-style exit status and the error for a
// failed exec of program.
func execStatus(program string, err error) (int, error) {
	status := StatusCannotExecute
	if errors.Is(err, unix.ENOENT) {
		status = StatusNotFound
	}
	return status, fmt.Errorf("exec %s: %w", program, err)
}

func hasVariable(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// resolveCommand returns the command with its program resolved in the
// current root: a default shell for an empty command, and a PATH lookup
// for a name without a slash.
func resolveCommand(command, env []string) ([]string, error) {
	if len(command) == 0 {
		if isExecutable("/bin/bash") {
			return []string{"/bin/bash"}, nil
		}
		return []string{"/bin/sh"}, nil
	}
	if strings.Contains(command[0], "/") {
		return command, nil
	}
	path := guestconfig.DefaultPath
	for _, kv := range env {
		if value, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = value
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		candidate := filepath.Join(dir, command[0])
		if isExecutable(candidate) {
			return append([]string{candidate}, command[1:]...), nil
		}
	}
	return nil, fmt.Errorf("command %q not found in PATH %q", command[0], path)
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// startedMark is written to the start marker of an app whose own process
// starts, after its pre-start handler.
const startedMark = "started\n"

func startedMarker(app string) string {
	return filepath.Join(guestconfig.GuestRunDir, app+".started")
}

// runPreStart runs the app's pre-start handler in the app's environment
// and waits for it. A handler that fails keeps the app from starting, and
// its status becomes the app's.
func runPreStart(app guestconfig.App) (int, error) {
	cmd := exec.Command(app.PreStart[0], app.PreStart[1:]...)
	cmd.Env = app.Env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	if err == nil {
		return 0, nil
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return StatusCannotExecute, fmt.Errorf("run pre-start handler %s: %w", app.PreStart[0], err)
	}
	status := exitErr.ExitCode()
	if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		status = 128 + int(ws.Signal())
	}
	return status, fmt.Errorf("pre-start handler %s failed with status %d; the app does not start", app.PreStart[0], status)
}

// PostStop runs the app's post-stop handler in the app's environment, from
// the unit's ExecStopPost=, if the app's process ran. It returns the exit
// status to use on failure.
func PostStop(name string) int {
	if data, err := os.ReadFile(startedMarker(name)); err != nil || string(data) != startedMark {
		// The app's own process never started.
		return 0
	}
	app, err := loadApp(name)
	if err == nil {
		err = connectStdio(app, false)
	}
	status := 1
	if err == nil {
		status, err = enterAndExec(app, app.PostStop, false)
	}
	fmt.Fprintf(os.Stderr, "stage1-vm: app %s: post-stop handler: %v\n", name, err)
	return status
}

// enterAndExec enters the app and execs argv. With mainProcess, argv is the
// app's own process: it goes into the app's cgroup and runs after the
// pre-start handler. The post-stop handler stays in the cgroup systemd gave
// it, because systemd starts app-exited there next and cannot once that
// cgroup has a child.
func enterAndExec(app guestconfig.App, argv []string, mainProcess bool) (int, error) {
	// The bounding set and no_new_privs belong to a thread, and execve keeps
	// those of the thread that calls it, so all of it runs on one thread.
	runtime.LockOSThread()
	var marker *os.File
	if mainProcess {
		// Opened as root before entering the app, written once the app's
		// own process is about to start: post-stop runs only then.
		var err error
		marker, err = os.OpenFile(startedMarker(app.Name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return 1, fmt.Errorf("create start marker: %w", err)
		}
		defer marker.Close()
	}
	if mainProcess && app.HasResourceLimits() {
		if err := enterAppCgroup(app); err != nil {
			return 1, err
		}
	}
	if err := enter(app, true); err != nil {
		return 1, err
	}
	if mainProcess && len(app.PreStart) > 0 {
		if status, err := runPreStart(app); err != nil {
			return status, err
		}
	}
	if marker != nil {
		if _, err := marker.WriteString(startedMark); err != nil {
			return 1, fmt.Errorf("write start marker: %w", err)
		}
		marker.Close()
	}
	var err error
	if app.Seccomp != nil {
		// NOTE: the pre-start handler above runs without the filter, because
		// the exec of a child would need calls that a retain set may leave
		// out.
		err = seccomp.InstallAndExec(*app.Seccomp, argv[0], argv, app.Env)
	} else {
		err = unix.Exec(argv[0], argv, app.Env)
	}
	return execStatus(argv[0], err)
}

// enter switches the calling thread to the app: its rootfs, working
// directory, ids and, with isolate, its bounding set and no_new_privs. The caller must keep its thread locked until it execs.
func enter(app guestconfig.App, isolate bool) error {
	// The guest's /proc, read before the app's rootfs replaces it.
	lastCap, err := lastCapability()
	if err != nil {
		return err
	}
	if err := unix.Chroot(app.RootfsPath()); err != nil {
		return fmt.Errorf("enter rootfs: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := os.MkdirAll(app.WorkingDirectory, 0o755); err != nil {
		return fmt.Errorf("create working directory %s: %w", app.WorkingDirectory, err)
	}
	if err := os.Chdir(app.WorkingDirectory); err != nil {
		return fmt.Errorf("enter working directory %s: %w", app.WorkingDirectory, err)
	}

	// Dropping from the bounding set needs CAP_SETPCAP, which the switch
	// to a non-root uid takes away, so it comes first.
	if isolate && app.RestrictCapabilities {
		if err := restrictCapabilities(app.Capabilities, lastCap); err != nil {
			return err
		}
	}

	gids := make([]int, len(app.SupplementaryGIDs))
	for i, g := range app.SupplementaryGIDs {
		gids[i] = int(g)
	}
	if err := unix.Setgroups(gids); err != nil {
		return fmt.Errorf("set supplementary groups %v: %w", gids, err)
	}
	if err := unix.Setgid(int(app.GID)); err != nil {
		return fmt.Errorf("set gid %d: %w", app.GID, err)
	}
	if err := unix.Setuid(int(app.UID)); err != nil {
		return fmt.Errorf("set uid %d: %w", app.UID, err)
	}

	if isolate && app.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return nil
}

// lastCapability returns the highest capability number of the running kernel.
func lastCapability() (uint, error) {
	data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/sys/kernel/cap_last_cap: %w", err)
	}
	return uint(n), nil
}

// restrictCapabilities drops every capability but keep from the bounding
// set. A root app then gets exactly keep when it execs, and an app of
// another user gets none, as with systemd's CapabilityBoundingSet=.
func restrictCapabilities(keep []uint, last uint) error {
	kept := map[uint]bool{}
	for _, c := range keep {
		kept[c] = true
	}
	for c := uint(0); c <= last; c++ {
		if kept[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// connectStream makes fd one end of a pipe whose other end goes to the
// agent: the write end for stdout and stderr, which the agent copies to the
// host, and the read end for stdin, which the agent fills from the host. A
// pipe rather than the socket itself, because apps reopen /dev/stdout, and
// a socket cannot be opened through /proc/self/fd.
func connectStream(stream, app string, fd int) error {
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("create %s pipe: %w", stream, err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	// The agent reads output from the pipe and writes input into it.
	agentEnd, appEnd := pipe[0], pipe[1]
	if stream == "stdin" {
		agentEnd, appEnd = pipe[1], pipe[0]
	}
	if err := passToAgent(fmt.Sprintf("%s %s\n", stream, app), agentEnd); err != nil {
		return fmt.Errorf("pass %s to the agent: %w", stream, err)
	}
	if err := unix.Dup3(appEnd, fd, 0); err != nil {
		return fmt.Errorf("dup %s: %w", stream, err)
	}
	return nil
}

// ExitStatus converts systemd's $EXIT_CODE and $EXIT_STATUS, which it sets
// for ExecStopPost=, into a shell-style status: the exit code, or 128 plus
// the signal number for an app killed by a signal.
func ExitStatus(code, status string) (int, error) {
	switch code {
	case "exited":
		n, err := strconv.Atoi(status)
		if err != nil || n < 0 || n > 255 {
			return 1, fmt.Errorf("invalid EXIT_STATUS %q", status)
		}
		return n, nil
	case "killed", "dumped":
		sig := unix.SignalNum("SIG" + status)
		if sig == 0 {
			return 1, fmt.Errorf("unknown signal %q in EXIT_STATUS", status)
		}
		return 128 + int(sig), nil
	case "":
		// The unit failed before its process started.
		return 1, errors.New("EXIT_CODE is not set; the app never started")
	}
	return 1, fmt.Errorf("invalid EXIT_CODE %q", code)
}

// Exited reports the app's exit status to the agent and waits until the
// agent has passed it and the app's output on to the host.
func Exited(name string) error {
	status, err := ExitStatus(os.Getenv("EXIT_CODE"), os.Getenv("EXIT_STATUS"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: app %s: %v; reporting status %d\n", name, err, status)
	}
	_, err = Control(fmt.Sprintf("exited %s %d", name, status))
	return err
}

// Control sends one command to the agent and returns its one-line reply.
func Control(command string) (string, error) {
	conn, err := net.Dial("unix", ports.ControlSocket)
	if err != nil {
		return "", fmt.Errorf("connect to the agent: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintln(conn, command); err != nil {
		return "", fmt.Errorf("send %q to the agent: %w", command, err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the agent's reply to %q: %w", command, err)
	}
	reply = strings.TrimSpace(reply)
	if reply != "ok" {
		return reply, fmt.Errorf("the agent rejected %q: %s", command, reply)
	}
	return reply, nil
}
