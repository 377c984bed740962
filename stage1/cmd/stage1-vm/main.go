// Command stage1-vm is every host-side entrypoint of the stage1 image. rkt
// runs it through links named after the entrypoints; the name picks one.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/stage1-vm/stage1-vm/stage1/appcmd"
	"github.com/stage1-vm/stage1-vm/stage1/attach"
	"github.com/stage1-vm/stage1-vm/stage1/enter"
	"github.com/stage1-vm/stage1-vm/stage1/gc"
	"github.com/stage1-vm/stage1-vm/stage1/run"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	switch name {
	case "run":
		os.Exit(run.Main(args))
	case "enter":
		os.Exit(enter.Main(args))
	case "attach":
		os.Exit(attach.Main(args))
	case "gc":
		exitOn(gc.GC(args))
	case "stop":
		exitOn(gc.Stop(args))
	case "app-add", "app-start", "app-stop", "app-rm":
		os.Exit(appcmd.Main(name, args))
	default:
		fmt.Fprintf(os.Stderr, "stage1-vm: unknown entrypoint %q: run this binary through a link named run, enter, attach, gc, stop, app-add, app-start, app-stop or app-rm\n", name)
		os.Exit(2)
	}
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: %v\n", err)
		os.Exit(1)
	}
}
