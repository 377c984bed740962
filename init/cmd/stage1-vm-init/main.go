// Command stage1-vm-init is the guest side of stage1-vm: PID 1 until systemd
// starts, the agent, and the helpers that the app units run.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/stage1-vm/stage1-vm/init/agent"
	"github.com/stage1-vm/stage1-vm/init/appexec"
	"github.com/stage1-vm/stage1-vm/init/boot"
	"github.com/stage1-vm/stage1-vm/init/powerbutton"
)

const usage = "usage: stage1-vm-init [agent | app-exec APP | post-stop APP | app-exited APP | enter-exec APP -- [COMMAND...] | notify-ready | power-button]"

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if os.Getpid() == 1 {
		boot.Fail(boot.Run())
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}

	switch cmd := os.Args[1]; {
	case cmd == "agent" && len(os.Args) == 2:
		if err := agent.Run(log); err != nil {
			log.Error("agent failed", "error", err)
			os.Exit(1)
		}
	case cmd == "app-exec" && len(os.Args) == 3:
		os.Exit(appexec.Exec(os.Args[2]))
	case cmd == "post-stop" && len(os.Args) == 3:
		os.Exit(appexec.PostStop(os.Args[2]))
	case cmd == "enter-exec" && len(os.Args) >= 4 && os.Args[3] == "--":
		os.Exit(appexec.Enter(os.Args[2], os.Args[4:]))
	case cmd == "app-exited" && len(os.Args) == 3:
		if err := appexec.Exited(os.Args[2]); err != nil {
			log.Error("report exit failed", "app", os.Args[2], "error", err)
			os.Exit(1)
		}
	case cmd == "power-button" && len(os.Args) == 2:
		if err := powerbutton.Run(log); err != nil {
			log.Error("power button service failed", "error", err)
			os.Exit(1)
		}
	case cmd == "notify-ready" && len(os.Args) == 2:
		if _, err := appexec.Control("ready"); err != nil {
			log.Error("report ready failed", "error", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}
