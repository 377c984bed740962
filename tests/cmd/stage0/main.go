// Command stage0 runs one busybox app in a pod with the stage1-vm image, as
// `rkt run` would, and exits with the pod's exit status.
//
// Usage: stage0 -aci out/stage1-vm.aci [-debug] -- COMMAND [ARG...]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

func main() {
	aci := flag.String("aci", "out/stage1-vm.aci", "stage1 image")
	debug := flag.Bool("debug", false, "pass --debug to the run entrypoint")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: stage0 -aci ACI [-debug] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	if err := run(*aci, *debug, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "stage0: %v\n", err)
		os.Exit(1)
	}
}

func run(aci string, debug bool, command []string) error {
	dataDir, err := os.MkdirTemp("", "stage0-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	image := filepath.Join(dataDir, "images/busybox")
	if err := stage0.BusyboxImage(image); err != nil {
		return err
	}
	args := []string{"--net=none"}
	if debug {
		args = append(args, "--debug")
	}
	d := &stage0.Driver{ACI: aci, DataDir: dataDir}
	res, err := d.Run([]stage0.App{{
		Name:  "demo",
		Image: image,
		App:   types.App{Exec: command, User: "0", Group: "0"},
	}}, stage0.Options{Args: args, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		return err
	}
	os.RemoveAll(dataDir)
	os.Exit(res.ExitCode)
	return nil
}
