// Command bench measures what a one-app pod of the stage1-vm image costs
// next to a floor, the same QEMU booting the same kernel into a program
// that ends the VM at once. It prints Markdown tables of the medians and
// writes them with a description of the run to a page.
//
// Usage: bench -aci out/stage1-vm.aci -kernel out/bzImage [-runs 10] [-concurrent 2] [-out docs/benchmarks.md]
//
// It needs root for the pods' overlay mounts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/stage1/qemu"
	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

type options struct {
	aci        string
	kernel     string
	runs       int
	concurrent int
	out        string
}

func main() {
	var opts options
	flag.StringVar(&opts.aci, "aci", "out/stage1-vm.aci", "stage1 image to measure")
	flag.StringVar(&opts.kernel, "kernel", "out/bzImage", "guest kernel for the floor boot; it must be identical to the kernel inside the image")
	flag.IntVar(&opts.runs, "runs", 10, "measured runs of each case, after one warm-up run that is not counted")
	flag.IntVar(&opts.concurrent, "concurrent", 2, "number of hello pods started at once in the concurrent case; below 2 skips the case")
	flag.StringVar(&opts.out, "out", "", "Markdown page to write; empty prints the tables only")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	if err := benchmark(opts); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func benchmark(opts options) error {
	if opts.runs < 1 {
		return fmt.Errorf("invalid -runs %d: use 1 or more", opts.runs)
	}
	if os.Geteuid() != 0 {
		return errors.New("the pods need root for their overlay mounts: run sudo make bench")
	}
	aci, err := filepath.Abs(opts.aci)
	if err != nil {
		return err
	}
	kernel, err := filepath.Abs(opts.kernel)
	if err != nil {
		return err
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	dir, err := os.MkdirTemp("", "stage1-vm-bench-")
	if err != nil {
		return err
	}
	defer removeWorkDir(dir)

	// The pods, the floor and the size figures all use one copy of the
	// image, which a concurrent make cannot change during the run.
	imageCopy := filepath.Join(dir, "stage1-vm.aci")
	if err := copyFile(aci, imageCopy); err != nil {
		return fmt.Errorf("copy the image: %w", err)
	}
	bundle := qemu.Bundle{Dir: filepath.Join(dir, "qemu")}
	imageKernel := filepath.Join(dir, "bzImage")
	sizes, err := scanACI(imageCopy, bundle.Dir, imageKernel)
	if err != nil {
		return err
	}
	if err := bundle.Check(); err != nil {
		return fmt.Errorf("%s: %w", aci, err)
	}
	if err := checkSameFile(kernel, imageKernel); err != nil {
		return fmt.Errorf("%w, so the floor would not boot the pods' kernel: run make, or pass the image's kernel with -kernel", err)
	}
	if n := countQEMUs(); n > 0 {
		log.Printf("warning: %d QEMU processes are already running and take CPU time from the VMs under test", n)
	}

	m := &machine{Runs: opts.runs, Date: time.Now().UTC().Format("2006-01-02"), Command: commandLine()}
	if opts.concurrent >= 2 {
		m.ConcurrentOf = opts.concurrent
	}
	describeHost(m)
	if m.QEMU, err = qemuVersion(bundle); err != nil {
		return err
	}
	if m.GuestKernel, err = kernelVersion(imageKernel); err != nil {
		return err
	}
	// The run entrypoint measures the TSC the same way for every pod.
	if m.TSCkHz, err = qemu.HostTSCkHz(); err != nil {
		log.Printf("measuring the host TSC failed, so the floor's guest calibrates it itself: %v", err)
	}

	fl, err := newFloor(filepath.Join(dir, "floor"), bundle, imageKernel, m.TSCkHz)
	if err != nil {
		return err
	}
	image := filepath.Join(dir, "images/busybox")
	if err := stage0.BusyboxImage(image); err != nil {
		return err
	}
	p := &pods{driver: &stage0.Driver{ACI: imageCopy, DataDir: filepath.Join(dir, "data")}, image: image}

	m.LoadBefore = loadAverage()
	res, err := measure(ctx, fl, p, opts.runs, m.ConcurrentOf)
	m.LoadAfter = loadAverage()
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted, no results written: %w", err)
	}
	if err != nil {
		return err
	}
	res.Image = sizes

	writeTables(os.Stdout, res, m)
	if opts.out != "" {
		if err := writePage(opts.out, res, m); err != nil {
			return err
		}
		log.Printf("wrote %s", opts.out)
	}
	return nil
}

// measure runs one warm-up of the floor and the hello pod, which is not
// counted, then the cases interleaved so that a change in the host's load
// affects all of them.
func measure(ctx context.Context, fl *floor, p *pods, runs, concurrent int) (*results, error) {
	log.Print("warm-up: one floor boot, one hello pod, one enter and the two stops, not counted")
	if _, err := fl.run(ctx); err != nil {
		return nil, fmt.Errorf("warm-up floor boot: %w", err)
	}
	if _, err := p.runHello(ctx); err != nil {
		return nil, fmt.Errorf("warm-up hello pod: %w", err)
	}
	if _, err := p.runSessions(ctx); err != nil {
		return nil, fmt.Errorf("warm-up enter and stop: %w", err)
	}

	res := &results{}
	for i := 1; i <= runs; i++ {
		busy := countQEMUs() > 0
		if busy {
			res.BusyIterations++
		}
		f, err := fl.run(ctx)
		if err != nil {
			return nil, fmt.Errorf("floor boot %d: %w", i, err)
		}
		res.Floor = append(res.Floor, f)
		pod, err := p.runHello(ctx)
		if err != nil {
			return nil, fmt.Errorf("hello pod %d: %w", i, err)
		}
		res.Pods = append(res.Pods, pod)
		progress := fmt.Sprintf("run %d/%d: floor %.2f s; hello pod first byte %.2f s, entrypoint exit %.2f s",
			i, runs, f.Elapsed.Seconds(), pod.FirstOutput.Seconds(), pod.EntrypointExit.Seconds())
		if concurrent >= 2 {
			c, err := p.runConcurrent(ctx, concurrent)
			if err != nil {
				return nil, fmt.Errorf("%d hello pods at once, run %d: %w", concurrent, i, err)
			}
			res.Concurrent = append(res.Concurrent, c)
			progress += fmt.Sprintf("; %d pods at once %.2f s", concurrent, c.AllExited.Seconds())
		}
		sessions, err := p.runSessions(ctx)
		if err != nil {
			return nil, fmt.Errorf("enter and stop, run %d: %w", i, err)
		}
		res.Sessions = append(res.Sessions, sessions)
		progress += fmt.Sprintf("; enter %.2f s, stop %.2f s, stop --force %.2f s",
			sessions.Enter.Seconds(), sessions.Stop.Seconds(), sessions.ForceStop.Seconds())
		if busy {
			progress += " (another QEMU was running at the start)"
		}
		log.Print(progress)
	}
	return res, nil
}

// removeWorkDir unmounts what a pod left mounted under dir, deepest first,
// then removes dir. The driver unmounts after every pod, so this matters
// only when a pod's cleanup failed.
func removeWorkDir(dir string) {
	mounts, err := mountsUnder(dir)
	if err != nil {
		log.Printf("list mounts under %s: %v", dir, err)
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			log.Printf("unmount %s: %v", m, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		log.Printf("remove %s: %v", dir, err)
	}
}

// mountsUnder returns the mount points below dir from /proc/self/mountinfo.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		// The kernel escapes space, tab, newline and backslash in octal.
		point := octalEscape.ReplaceAllStringFunc(fields[4], func(s string) string {
			var b byte
			fmt.Sscanf(s[1:], "%o", &b)
			return string([]byte{b})
		})
		if strings.HasPrefix(point, dir+"/") {
			mounts = append(mounts, point)
		}
	}
	return mounts, nil
}

var octalEscape = regexp.MustCompile(`\\[0-7]{3}`)

// commandLine returns this program's command line with `go run
// ./tests/cmd/bench` in place of the program's path.
func commandLine() string {
	args := []string{"go", "run", "./tests/cmd/bench"}
	plain := regexp.MustCompile(`^[A-Za-z0-9_./=:-]+$`)
	for _, a := range os.Args[1:] {
		if !plain.MatchString(a) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}
