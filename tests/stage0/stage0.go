// Package stage0 reproduces what rkt 1.30.0 does before it hands a pod to
// the stage1 run entrypoint: it unpacks the stage1 image, lays out the pod
// directory with overlay mounts for the stage1 rootfs and each app rootfs,
// writes the pod manifest, takes the pod lock and runs the entrypoint with
// the same argv, working directory and environment.
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
	"strings"
	"sync"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"
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
	// Ready tells whether the supervisor-status symlink pointed to "ready".
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
	uuid := NewUUID()
	podDir := filepath.Join(d.DataDir, "pods/run", uuid)
	mounts, err := d.prepare(uuid, podDir, apps, opts)
	defer func() {
		_ = d.gc(uuid, podDir)
		unmountAll(mounts)
		_ = os.RemoveAll(filepath.Join(d.DataDir, "pods/run", uuid))
	}()
	if err != nil {
		return nil, err
	}
	return d.exec(uuid, podDir, opts)
}

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

	pm := schema.BlankPodManifest()
	pm.ACVersion = types.SemVer{Major: 1, Minor: 30}
	pm.Annotations.Set("coreos.com/rkt/stage1/mutable", "false")
	for _, a := range apps {
		name, err := types.NewACName(a.Name)
		if err != nil {
			return mounts, err
		}
		target := filepath.Join(rootfs, "opt/stage2", a.Name, "rootfs")
		if err := overlay(a.Image, filepath.Join(podDir, "overlay", a.Name), target); err != nil {
			return mounts, err
		}
		mounts = append(mounts, target)
		app := a.App
		imgName, _ := types.NewACIdentifier("example.com/" + a.Name)
		imgID, err := types.NewHash("sha512-" + strings.Repeat("0", 64))
		if err != nil {
			return mounts, err
		}
		pm.Apps = append(pm.Apps, schema.RuntimeApp{
			Name:  *name,
			Image: schema.RuntimeImage{Name: imgName, ID: *imgID},
			App:   &app,
		})
	}
	data := opts.Manifest
	if data == nil {
		if data, err = json.Marshal(pm); err != nil {
			return mounts, err
		}
	}
	return mounts, os.WriteFile(filepath.Join(podDir, "pod"), data, 0o644)
}

// exec runs the run entrypoint as rkt does: cwd is the pod directory, the
// pod lock is an flock'ed directory fd named by RKT_LOCK_FD.
func (d *Driver) exec(uuid, podDir string, opts Options) (*Result, error) {
	lock, err := os.Open(podDir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("lock pod %s: %w", uuid, err)
	}

	args := opts.Args
	if args == nil {
		args = []string{"--net=none"}
	}
	entry := filepath.Join(podDir, "stage1/rootfs/stage1-vm/host/run")
	cmd := exec.Command(entry, append(append([]string{}, args...), uuid)...)
	cmd.Dir = podDir
	cmd.ExtraFiles = []*os.File{lock}
	cmd.Env = append(append(os.Environ(), opts.Env...), "RKT_LOCK_FD=3")
	var stdout, stderr bytes.Buffer
	cmd.Stdin = opts.Stdin
	cmd.Stdout = writers(&stdout, opts.Stdout)
	cmd.Stderr = writers(&stderr, opts.Stderr)

	res := &Result{UUID: uuid, PodDir: podDir, Statuses: map[string]string{}}
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	case err != nil:
		return nil, err
	}
	res.Stdout, res.Stderr = stdout.String(), stderr.String()

	statusDir := filepath.Join(podDir, "stage1/rootfs/rkt/status")
	entries, _ := os.ReadDir(statusDir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(statusDir, e.Name()))
		if err == nil {
			res.Statuses[e.Name()] = string(data)
		}
	}
	target, err := os.Readlink(filepath.Join(podDir, "stage1/rootfs/rkt/supervisor-status"))
	res.Ready = err == nil && target == "ready"
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
		if strings.Contains(hdr.Name, "..") {
			return fmt.Errorf("invalid entry %q in %s", hdr.Name, aciPath)
		}
		path := filepath.Join(dir, hdr.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, os.FileMode(hdr.Mode)&os.ModePerm); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, path); err != nil {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, os.FileMode(hdr.Mode)&os.ModePerm)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
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
