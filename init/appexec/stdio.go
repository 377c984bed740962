package appexec

import (
	"fmt"
	"net"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/init/ports"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// defaultTTYSize is the window size of an app's terminal until a client
// attaches with its own.
var defaultTTYSize = pty.Winsize{Rows: 24, Cols: 80}

// connectStdio connects the process's stdin, stdout and stderr according
// to the app's modes, before it execs the app: pipes to the agent for the log,
// interactive and stream modes, /dev/null for null, and one pseudo-terminal
// for every stream in tty mode. withStdin is false for the post-stop
// handler, which keeps the unit's /dev/null as its stdin.
func connectStdio(app guestconfig.App, withStdin bool) error {
	stdin, stdout, stderr := app.StdioModes()
	if !withStdin {
		stdin = guestconfig.ModeNull
	}
	var ttyFDs []int
	for fd, mode := range []guestconfig.StreamMode{stdin, stdout, stderr} {
		if mode == guestconfig.ModeTTY {
			ttyFDs = append(ttyFDs, fd)
		}
	}
	if len(ttyFDs) > 0 {
		if err := connectTTY(app.Name, ttyFDs); err != nil {
			return err
		}
	}
	for fd, name := range []string{guestconfig.Stdout, guestconfig.Stderr} {
		switch []guestconfig.StreamMode{stdout, stderr}[fd] {
		case guestconfig.ModeLog, guestconfig.ModeStream:
			if err := connectStream(name, app.Name, fd+1); err != nil {
				return err
			}
		case guestconfig.ModeNull:
			if err := connectNull(fd + 1); err != nil {
				return err
			}
		}
	}
	// A null stdin is already /dev/null: the unit sets StandardInput=null.
	if stdin == guestconfig.ModeInteractive || stdin == guestconfig.ModeStream {
		return connectStream(guestconfig.Stdin, app.Name, 0)
	}
	return nil
}

func connectNull(fd int) error {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	return unix.Dup3(int(null.Fd()), fd, 0)
}

// connectTTY allocates a pseudo-terminal, passes its master to the agent,
// which serves it to attach clients, and makes its slave the process's fds
// and controlling terminal.
func connectTTY(app string, fds []int) error {
	master, slave, err := pty.Open()
	if err != nil {
		return fmt.Errorf("allocate a terminal: %w", err)
	}
	defer master.Close()
	defer slave.Close()
	if err := pty.Setsize(master, &defaultTTYSize); err != nil {
		return fmt.Errorf("set the terminal's window size: %w", err)
	}
	if err := passToAgent(fmt.Sprintf("%s %s\n", guestconfig.TTY, app), int(master.Fd())); err != nil {
		return fmt.Errorf("pass the terminal to the agent: %w", err)
	}
	for _, fd := range fds {
		if err := unix.Dup3(int(slave.Fd()), fd, 0); err != nil {
			return fmt.Errorf("dup the terminal to fd %d: %w", fd, err)
		}
	}
	// systemd makes each service's process a session leader without a
	// controlling terminal, so Setsid fails with EPERM there, and
	// TIOCSCTTY can take the terminal.
	if _, err := unix.Setsid(); err != nil && err != unix.EPERM {
		return fmt.Errorf("start a session: %w", err)
	}
	if err := unix.IoctlSetInt(int(slave.Fd()), unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("make the terminal the controlling terminal: %w", err)
	}
	return nil
}

// passToAgent sends the header and fd to the agent's IO socket in one
// message (SCM_RIGHTS).
func passToAgent(header string, fd int) error {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: ports.IOSocket, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("connect to the agent: %w", err)
	}
	defer conn.Close()
	if _, _, err := conn.WriteMsgUnix([]byte(header), unix.UnixRights(fd), nil); err != nil {
		return err
	}
	return nil
}
