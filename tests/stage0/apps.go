package stage0

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/appc/spec/schema"
	"golang.org/x/sys/unix"
)

// The rkt app commands on a mutable pod, done as rkt 1.30.0 does them:
// rkt changes the pod manifest and the app's files, then runs the stage1
// entrypoint with a clean environment.

// AddApp renders the app into the pod, adds it to the pod manifest and
// runs the app/add entrypoint, as rkt app add does.
func (p *Pod) AddApp(a App) error {
	unlock, err := p.lockManifest()
	if err != nil {
		return err
	}
	defer unlock()
	pm, err := p.manifest()
	if err != nil {
		return err
	}
	ra, target, err := renderApp(p.Dir, a)
	if target != "" {
		p.mounts = append(p.mounts, target)
	}
	if err != nil {
		return err
	}
	pm.Apps = append(pm.Apps, ra)
	if err := p.writeManifest(pm); err != nil {
		return err
	}
	if err := os.WriteFile(p.statusPath(a.Name+"-created"), nil, 0o644); err != nil {
		return err
	}
	_, err = p.appCommand("app-add", "--debug=false", "--uuid="+p.UUID, "--app="+a.Name)
	return err
}

// StartApp runs the app/start entrypoint after resetting the app's status
// files, as rkt app start does.
func (p *Pod) StartApp(name string) error {
	_ = os.Remove(p.statusPath(name))
	if err := os.WriteFile(p.statusPath(name+"-started"), nil, 0o644); err != nil {
		return err
	}
	_, err := p.appCommand("app-start", "--debug=false", "--app="+name)
	return err
}

// StopApp runs the app/stop entrypoint and returns its exit status, which
// is 5 for an app that is not running.
func (p *Pod) StopApp(name string) (int, error) {
	return p.appCommand("app-stop", "--debug=false", "--app="+name)
}

// RemoveApp stops and removes the app as rkt app rm does: app/stop, then
// app/rm, then the app's rootfs, files and manifest entry.
func (p *Pod) RemoveApp(name string) error {
	unlock, err := p.lockManifest()
	if err != nil {
		return err
	}
	defer unlock()
	if status, err := p.appCommand("app-stop", "--debug=false", "--app="+name); err != nil && status != 5 {
		return err
	}
	if _, err := p.appCommand("app-rm", "--debug=false", "--app="+name); err != nil {
		return err
	}
	rootfs := filepath.Join(p.Dir, "stage1/rootfs/opt/stage2", name, "rootfs")
	if err := unix.Unmount(rootfs, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", rootfs, err)
	}
	for _, dir := range []string{filepath.Join(p.Dir, "overlay", name), filepath.Dir(rootfs)} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	_ = os.Remove(p.statusPath(name))
	pm, err := p.manifest()
	if err != nil {
		return err
	}
	for i, ra := range pm.Apps {
		if ra.Name.String() == name {
			pm.Apps = append(pm.Apps[:i], pm.Apps[i+1:]...)
			break
		}
	}
	return p.writeManifest(pm)
}

// appCommand runs an app entrypoint from the pod directory with the
// environment rkt gives it, and returns its exit status.
func (p *Pod) appCommand(entrypoint string, args ...string) (int, error) {
	pid, err := os.ReadFile(filepath.Join(p.Dir, "pid"))
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(filepath.Join(p.Dir, "stage1/rootfs/stage1-vm/host", entrypoint), args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{
		"RKT_STAGE1_ENTERCMD=" + filepath.Join(p.Dir, "stage1/rootfs/stage1-vm/host/enter"),
		"RKT_STAGE1_ENTERPID=" + strings.TrimSpace(string(pid)),
		"PATH=" + os.Getenv("PATH"),
	}
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), fmt.Errorf("%s %s: exit status %d: %s", entrypoint, strings.Join(args, " "), exitErr.ExitCode(), out)
	}
	return 0, err
}

func (p *Pod) statusPath(name string) string {
	return filepath.Join(p.Dir, "stage1/rootfs/rkt/status", name)
}

// lockManifest takes the pod manifest's lock, as rkt app add and rm do.
func (p *Pod) lockManifest() (func(), error) {
	f, err := os.OpenFile(filepath.Join(p.Dir, "pod.lck"), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

func (p *Pod) manifest() (*schema.PodManifest, error) {
	data, err := os.ReadFile(filepath.Join(p.Dir, "pod"))
	if err != nil {
		return nil, err
	}
	pm := &schema.PodManifest{}
	if err := json.Unmarshal(data, pm); err != nil {
		return nil, err
	}
	return pm, nil
}

func (p *Pod) writeManifest(pm *schema.PodManifest) error {
	data, err := json.Marshal(pm)
	if err != nil {
		return err
	}
	tmp := filepath.Join(p.Dir, "pod.tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(p.Dir, "pod"))
}
