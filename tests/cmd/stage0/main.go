// Command stage0 runs one busybox app in a pod with the stage1-vm image, as
// `rkt run` would, and exits with the pod's exit status.
//
// Usage: stage0 -aci out/stage1-vm.aci [-debug] -- COMMAND [ARG...]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

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
	status, err := run(*aci, *debug, flag.Args())
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage0: %v\n", err)
		os.Exit(1)
	}
	os.Exit(status)
}

// run runs the pod and returns its exit status.
func run(aci string, debug bool, command []string) (int, error) {
	dataDir, err := os.MkdirTemp("", "stage0-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dataDir)
	image := filepath.Join(dataDir, "images/busybox")
	if err := stage0.BusyboxImage(image); err != nil {
		return 0, err
	}
	args := []string{"--net=none"}
	if debug {
		args = append(args, "--debug")
	}
	d := &stage0.Driver{ACI: aci, DataDir: dataDir}
	pod, err := d.Start([]stage0.App{{
		Name:  "demo",
		Image: image,
		App:   types.App{Exec: command, User: "0", Group: "0"},
	}}, stage0.Options{Args: args, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		return 0, err
	}
	defer pod.Close()

	// A signal stops the pod as rkt stop would; the pod is then removed.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for range sigs {
			_ = pod.Process().Signal(syscall.SIGTERM)
		}
	}()
	res, err := pod.Wait()
	if err != nil {
		return 0, err
	}
	return res.ExitCode, nil
}
