// Package appexec runs inside an app's systemd unit: Exec enters the app's
// rootfs and execs the app, Exited reports the app's exit status. Enter
// runs an enter session's command in the same environment.
package appexec

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/init/ports"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// Exit statuses of Exec when the app cannot start, as a shell reports them.
const (
	StatusCannotExecute = 126
	StatusNotFound      = 127
)

func loadApp(name string) (guestconfig.App, error) {
	pod, err := guestconfig.Load(filepath.Join(guestconfig.GuestConfigDir, guestconfig.FileName))
	if err != nil {
		return guestconfig.App{}, err
	}
	app, ok := pod.App(name)
	if !ok {
		return guestconfig.App{}, fmt.Errorf("app %q is not in the pod", name)
	}
	return app, nil
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
	if err := connectStream("stdout", name, 1); err != nil {
		return 1, err
	}
	if err := connectStream("stderr", name, 2); err != nil {
		return 1, err
	}
	return enterAndExec(app, false)
}

// Enter replaces the process with command, run in the app's environment
// as the app runs: rootfs, uid and gids, environment and working
// directory. A command without a slash is looked up in the PATH of the
// app's environment. An empty command runs /bin/bash, or /bin/sh where the
// image has no /bin/bash. TERM from this process's environment is added
// when the app's environment has none. On failure Enter writes the error
// to stderr and returns the exit status to use.
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
	app.Exec = command
	return enterAndExec(app, true)
}

func hasVariable(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// enterAndExec enters the app's environment and execs app.Exec. With
// lookup set, it resolves the command inside the rootfs first.
func enterAndExec(app guestconfig.App, lookup bool) (int, error) {
	if err := unix.Chroot(app.RootfsPath()); err != nil {
		return 1, fmt.Errorf("enter rootfs: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return 1, err
	}
	if err := os.MkdirAll(app.WorkingDirectory, 0o755); err != nil {
		return 1, fmt.Errorf("create working directory %s: %w", app.WorkingDirectory, err)
	}
	if err := os.Chdir(app.WorkingDirectory); err != nil {
		return 1, fmt.Errorf("enter working directory %s: %w", app.WorkingDirectory, err)
	}

	gids := make([]int, len(app.SupplementaryGIDs))
	for i, g := range app.SupplementaryGIDs {
		gids[i] = int(g)
	}
	if err := unix.Setgroups(gids); err != nil {
		return 1, fmt.Errorf("set supplementary groups %v: %w", gids, err)
	}
	if err := unix.Setgid(int(app.GID)); err != nil {
		return 1, fmt.Errorf("set gid %d: %w", app.GID, err)
	}
	if err := unix.Setuid(int(app.UID)); err != nil {
		return 1, fmt.Errorf("set uid %d: %w", app.UID, err)
	}

	if lookup {
		argv, err := resolveCommand(app.Exec, app.Env)
		if err != nil {
			return StatusNotFound, err
		}
		app.Exec = argv
	}
	err := unix.Exec(app.Exec[0], app.Exec, app.Env)
	status := StatusCannotExecute
	if errors.Is(err, unix.ENOENT) {
		status = StatusNotFound
	}
	return status, fmt.Errorf("exec %s: %w", app.Exec[0], err)
}

// defaultPath is the search path for commands when the app's environment
// has no PATH; it is the one appc gives apps.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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
	path := defaultPath
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

// connectStream makes fd the write end of a pipe whose read end goes to the
// agent, which copies it to the host's stdout or stderr. A pipe rather than
// the socket itself, because apps reopen /dev/stdout, and a socket cannot be
// opened through /proc/self/fd.
func connectStream(stream, app string, fd int) error {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: ports.IOSocket, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("connect %s to the agent: %w", stream, err)
	}
	defer conn.Close()
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("create %s pipe: %w", stream, err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	header := []byte(fmt.Sprintf("%s %s\n", stream, app))
	if _, _, err := conn.WriteMsgUnix(header, unix.UnixRights(pipe[0]), nil); err != nil {
		return fmt.Errorf("pass %s to the agent: %w", stream, err)
	}
	if err := unix.Dup3(pipe[1], fd, 0); err != nil {
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
