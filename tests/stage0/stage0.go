// Package stage0 reproduces what rkt 1.30.0 does before it hands a pod to
// the stage1 run entrypoint. It unpacks the stage1 image and lays out the
// pod directory with overlay mounts for the stage1 rootfs and each app
// rootfs. Then it writes the pod manifest, takes the pod lock and runs the
// entrypoint with rkt's argv, working directory and environment.
package stage0

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/tartree"
)

// Driver runs pods with one stage1 image under DataDir, which plays the
// role of rkt's data directory.
type Driver struct {
	ACI     string
	DataDir string

	once     sync.Once
	imageDir string
	err      error
}

// App is one app of a pod: an image tree and the app section of its manifest.
type App struct {
	Name string
	// Image is a folder holding the app's rootfs, used as the overlay's lower layer.
	Image string
	App   types.App
	// ReadOnlyRootFS is the pod manifest's readOnlyRootFS of the app.
	ReadOnlyRootFS bool
	// Mounts are the pod manifest's mounts of the app (rkt's --mount).
	Mounts []schema.Mount
	// Annotations are the pod manifest's annotations of the app, such as
	// the stream modes that rkt's --stdin, --stdout and --stderr set.
	Annotations types.Annotations
}

// Options are what `rkt run` adds around the apps.
type Options struct {
	// Args are the run entrypoint's flags before the UUID; nil means --net=none.
	Args []string
	// Env is added to the driver's own environment.
	Env    []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Manifest, when set, replaces the pod manifest built from the apps.
	Manifest []byte
	// Volumes are the pod manifest's volumes (rkt's --volume).
	Volumes []types.Volume
	// Stage1Files are written into the stage1 rootfs by their path there,
	// as rkt writes etc/rkt-resolv.conf for --dns and etc/rkt-hosts for
	// --hosts-entry.
	Stage1Files map[string]string
	// Ports are the pod manifest's forwarded ports, as rkt writes them
	// for --port NAME:HOSTPORT.
	Ports []types.ExposedPort
	// Mutable makes the pod a mutable one, as rkt app sandbox does: the
	// pod manifest has the mutable annotation and the run entrypoint gets
	// --mutable.
	Mutable bool
}

// Result is what a finished pod left.
type Result struct {
	UUID     string
	PodDir   string
	ExitCode int
	Stdout   string
	Stderr   string
	// Statuses are the rkt/status/<app> files, by app.
	Statuses map[string]string
	// Ready reports whether the supervisor-status symlink pointed to "ready".
	Ready bool
}

// NewUUID returns a random version 4 UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Run prepares a pod, runs the entrypoint to completion and removes the pod.
func (d *Driver) Run(apps []App, opts Options) (*Result, error) {
	pod, err := d.Start(apps, opts)
	if err != nil {
		return nil, err
	}
	defer pod.Close()
	return pod.Wait()
}

// Pod is a pod whose run entrypoint was started.
type Pod struct {
	UUID   string
	Dir    string
	driver *Driver
	mounts []string
	lock   *os.File
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// Start prepares a pod and starts its run entrypoint without waiting.
func (d *Driver) Start(apps []App, opts Options) (*Pod, error) {
	uuid := NewUUID()
	p := &Pod{UUID: uuid, Dir: filepath.Join(d.DataDir, "pods/run", uuid), driver: d}
	mounts, err := d.prepare(uuid, p.Dir, apps, opts)
	p.mounts = mounts
	if err == nil {
		err = p.start(opts)
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close runs the gc entrypoint, unmounts the pod's overlays and removes it.
func (p *Pod) Close() error {
	if p.cmd != nil && p.cmd.ProcessState == nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
	if p.lock != nil {
		p.lock.Close()
	}
	err := p.driver.gc(p.UUID, p.Dir)
	unmountAll(p.mounts)
	_ = os.RemoveAll(p.Dir)
	return err
}

// GC runs the gc entrypoint as `rkt gc` does, and leaves the pod directory
// and its mounts in place, so that a test can check what gc removed.
func (p *Pod) GC() error { return p.driver.gc(p.UUID, p.Dir) }

// Stop runs the stop entrypoint as `rkt stop` does.
func (p *Pod) Stop(force bool) error {
	args := []string{p.UUID}
	if force {
		args = []string{"--force", p.UUID}
	}
	cmd := exec.Command(filepath.Join(p.Dir, "stage1/rootfs/stage1-vm/host/stop"), args...)
	cmd.Dir = p.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stop pod %s: %w: %s", p.UUID, err, out)
	}
	return nil
}

// EnterCommand returns the enter entrypoint's command as rkt enter and
// rkt app exec run it: the run entrypoint's pid from the pod's pid file,
// the app name, then the command after "--". The caller sets its stdio.
func (p *Pod) EnterCommand(app string, command ...string) (*exec.Cmd, error) {
	data, err := os.ReadFile(filepath.Join(p.Dir, "pid"))
	if err != nil {
		return nil, fmt.Errorf("read the pid file of pod %s: %w", p.UUID, err)
	}
	args := append([]string{"--pid=" + strings.TrimSpace(string(data)), "--appname=" + app, "--"}, command...)
	cmd := exec.Command(filepath.Join(p.Dir, "stage1/rootfs/stage1-vm/host/enter"), args...)
	cmd.Dir = p.Dir
	return cmd, nil
}

// AttachCommand returns the attach entrypoint's command as rkt attach runs
// it: the given arguments, the pod directory as the working directory, and
// only RKT_STAGE1_ENTERCMD, RKT_STAGE1_ENTERPID and PATH in the
// environment. The caller sets its stdio.
func (p *Pod) AttachCommand(args ...string) (*exec.Cmd, error) {
	data, err := os.ReadFile(filepath.Join(p.Dir, "pid"))
	if err != nil {
		return nil, fmt.Errorf("read the pid file of pod %s: %w", p.UUID, err)
	}
	host := filepath.Join(p.Dir, "stage1/rootfs/stage1-vm/host")
	cmd := exec.Command(filepath.Join(host, "attach"), args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{
		"RKT_STAGE1_ENTERCMD=" + filepath.Join(host, "enter"),
		"RKT_STAGE1_ENTERPID=" + strings.TrimSpace(string(data)),
		"PATH=" + os.Getenv("PATH"),
	}
	return cmd, nil
}

// Ready reports whether the pod reported that its apps started.
func (p *Pod) Ready() bool {
	target, err := os.Readlink(filepath.Join(p.Dir, "stage1/rootfs/rkt/supervisor-status"))
	return err == nil && target == "ready"
}

// Process returns the run entrypoint's process.
func (p *Pod) Process() *os.Process { return p.cmd.Process }

func (d *Driver) prepare(uuid, podDir string, apps []App, opts Options) ([]string, error) {
	image, err := d.image()
	if err != nil {
		return nil, err
	}
	var mounts []string
	stage1 := filepath.Join(podDir, "stage1")
	rootfs := filepath.Join(stage1, "rootfs")
	if err := overlay(filepath.Join(image, "rootfs"), filepath.Join(podDir, "overlay/stage1"), rootfs); err != nil {
		return mounts, err
	}
	mounts = append(mounts, rootfs)
	if err := copyFile(filepath.Join(image, "manifest"), filepath.Join(stage1, "manifest")); err != nil {
		return mounts, err
	}

	for name, content := range opts.Stage1Files {
		path := filepath.Join(rootfs, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return mounts, err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return mounts, err
		}
	}

	pm := schema.BlankPodManifest()
	pm.ACVersion = types.SemVer{Major: 1, Minor: 30}
	pm.Annotations.Set("coreos.com/rkt/stage1/mutable", strconv.FormatBool(opts.Mutable))
	for _, a := range apps {
		ra, target, err := renderApp(podDir, a)
		if target != "" {
			mounts = append(mounts, target)
		}
		if err != nil {
			return mounts, err
		}
		pm.Apps = append(pm.Apps, ra)
	}
	pm.Volumes = opts.Volumes
	pm.Ports = opts.Ports
	data := opts.Manifest
	if data == nil {
		if data, err = json.Marshal(pm); err != nil {
			return mounts, err
		}
	}
	return mounts, os.WriteFile(filepath.Join(podDir, "pod"), data, 0o644)
}

// renderApp mounts the app's rootfs as rkt does and returns its entry of
// the pod manifest and the rootfs mount, if made.
func renderApp(podDir string, a App) (schema.RuntimeApp, string, error) {
	name, err := types.NewACName(a.Name)
	if err != nil {
		return schema.RuntimeApp{}, "", err
	}
	target := filepath.Join(podDir, "stage1/rootfs/opt/stage2", a.Name, "rootfs")
	if err := overlay(a.Image, filepath.Join(podDir, "overlay", a.Name), target); err != nil {
		return schema.RuntimeApp{}, "", err
	}
	app := a.App
	imgName, _ := types.NewACIdentifier("example.com/" + a.Name)
	imgID, err := types.NewHash("sha512-" + strings.Repeat("0", 64))
	if err != nil {
		return schema.RuntimeApp{}, target, err
	}
	return schema.RuntimeApp{
		Name:           *name,
		Image:          schema.RuntimeImage{Name: imgName, ID: *imgID},
		App:            &app,
		ReadOnlyRootFS: a.ReadOnlyRootFS,
		Mounts:         a.Mounts,
		Annotations:    a.Annotations,
	}, target, nil
}

// start runs the run entrypoint as rkt does: cwd is the pod directory, the
// pod lock is an flock'ed directory fd named by RKT_LOCK_FD.
func (p *Pod) start(opts Options) error {
	lock, err := os.Open(p.Dir)
	if err != nil {
		return err
	}
	p.lock = lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock pod %s: %w", p.UUID, err)
	}

	args := opts.Args
	if args == nil {
		args = []string{"--net=none"}
	}
	if opts.Mutable {
		args = append(append([]string{}, args...), "--mutable")
	}
	entry := filepath.Join(p.Dir, "stage1/rootfs/stage1-vm/host/run")
	p.cmd = exec.Command(entry, append(append([]string{}, args...), p.UUID)...)
	p.cmd.Dir = p.Dir
	p.cmd.ExtraFiles = []*os.File{lock}
	p.cmd.Env = append(append(os.Environ(), opts.Env...), "RKT_LOCK_FD=3")
	p.cmd.Stdin = opts.Stdin
	p.cmd.Stdout = writers(&p.stdout, opts.Stdout)
	p.cmd.Stderr = writers(&p.stderr, opts.Stderr)
	return p.cmd.Start()
}

// Wait waits for the run entrypoint to exit and collects what it left.
func (p *Pod) Wait() (*Result, error) {
	res := &Result{UUID: p.UUID, PodDir: p.Dir, Statuses: map[string]string{}}
	err := p.cmd.Wait()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
		if res.ExitCode < 0 {
			res.ExitCode = 128 + int(exitErr.Sys().(interface{ Signal() unix.Signal }).Signal())
		}
	case err != nil:
		return nil, err
	}
	res.Stdout, res.Stderr = p.stdout.String(), p.stderr.String()

	statusDir := filepath.Join(p.Dir, "stage1/rootfs/rkt/status")
	entries, _ := os.ReadDir(statusDir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(statusDir, e.Name()))
		if err == nil {
			res.Statuses[e.Name()] = string(data)
		}
	}
	res.Ready = p.Ready()
	return res, nil
}

// gc runs the gc entrypoint as rkt does after a pod exited.
func (d *Driver) gc(uuid, podDir string) error {
	entry := filepath.Join(podDir, "stage1/rootfs/stage1-vm/host/gc")
	if _, err := os.Stat(entry); err != nil {
		return nil
	}
	cmd := exec.Command(entry, "--local-config", filepath.Join(d.DataDir, "local-config"), uuid)
	cmd.Dir = podDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("gc of pod %s: %w: %s", uuid, err, out)
	}
	return nil
}

func writers(buf *bytes.Buffer, extra io.Writer) io.Writer {
	if extra == nil {
		return buf
	}
	return io.MultiWriter(buf, extra)
}

// image unpacks the stage1 ACI once.
func (d *Driver) image() (string, error) {
	d.once.Do(func() {
		d.imageDir = filepath.Join(d.DataDir, "cas/stage1")
		d.err = extract(d.ACI, d.imageDir)
	})
	return d.imageDir, d.err
}

func overlay(lower, base, target string) error {
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, dir := range []string{upper, work, target} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return fmt.Errorf("overlay mount on %s: %w", target, err)
	}
	return nil
}

func unmountAll(mounts []string) {
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
}

// extract unpacks a gzip-compressed ACI into dir.
func extract(aciPath, dir string) error {
	f, err := os.Open(aciPath)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", aciPath, err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := tartree.ExtractEntry(tr, hdr, filepath.Join(dir, hdr.Name)); err != nil {
			return fmt.Errorf("extract %s: %w", aciPath, err)
		}
	}
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// Exited reports whether the run entrypoint has exited, including as a
// zombie that Wait has not collected yet.
func (p *Pod) Exited() bool {
	if p.cmd.ProcessState != nil {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}
