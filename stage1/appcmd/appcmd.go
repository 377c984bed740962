// Package appcmd is the host side of the rkt app commands on a mutable pod
// (rkt app sandbox): the app/add, app/start, app/stop and app/rm
// entrypoints. rkt has already changed the pod manifest and the app's
// files when it calls them; each entrypoint prepares what the host must
// and asks the guest agent, through the run entrypoint's enter socket, to
// do the rest.
//
// Arguments, as rkt 1.30.0 passes them: --debug=BOOL --uuid=UUID
// --app=NAME for app/add, --debug=BOOL --app=NAME for the others. The
// working directory is the pod directory.
package appcmd

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/stage1/enter"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
	"github.com/stage1-vm/stage1-vm/stage1/qemu"
	"github.com/stage1-vm/stage1-vm/stage1/units"
	"github.com/stage1-vm/stage1-vm/stage1/volume"
)

// ErrorExitStatus is the exit status of an app command that failed.
const ErrorExitStatus = 254

// NotRunningStatus is app/stop's exit status for an app that is not
// running, which rkt app stop and rkt app rm expect.
const NotRunningStatus = 5

// statusWait bounds how long app/stop waits for the run entrypoint to
// record the stopped app's exit status.
const statusWait = 5 * time.Second

// Flags are the arguments of an app command.
type Flags struct {
	Debug bool
	UUID  string
	App   string
}

// ParseFlags parses an app command's arguments. The UUID is optional, as
// only app/add gets it.
func ParseFlags(command string, args []string) (*Flags, error) {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &Flags{}
	fs.BoolVar(&f.Debug, "debug", false, "log what the command does")
	fs.StringVar(&f.UUID, "uuid", "", "the pod's UUID")
	fs.StringVar(&f.App, "app", "", "the app's name")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected arguments %q", command, fs.Args())
	}
	if f.App == "" {
		return nil, fmt.Errorf("%s: --app is missing", command)
	}
	if _, err := types.NewACName(f.App); err != nil {
		return nil, fmt.Errorf("%s: invalid --app %q: %w", command, f.App, err)
	}
	if f.UUID != "" {
		if _, err := types.NewUUID(f.UUID); err != nil {
			return nil, fmt.Errorf("%s: invalid --uuid %q: %w", command, f.UUID, err)
		}
	}
	return f, nil
}

// Main runs the app command named command ("app-add", "app-start",
// "app-stop" or "app-rm") and returns its exit status.
func Main(command string, args []string) int {
	flags, err := ParseFlags(command, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: %v\n", err)
		return ErrorExitStatus
	}
	level := slog.LevelWarn
	if flags.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("app", flags.App)
	podDir, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: %v\n", err)
		return ErrorExitStatus
	}
	c := &appCommand{podDir: podDir, uuid: filepath.Base(podDir), app: flags.App, log: log}
	if flags.UUID != "" && flags.UUID != c.uuid {
		fmt.Fprintf(os.Stderr, "stage1-vm: %s: --uuid %s is not the pod of the working directory %s\n", command, flags.UUID, podDir)
		return ErrorExitStatus
	}
	status, err := c.run(command)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stage1-vm: %s %s in pod %s: %v\n", command, flags.App, c.uuid, err)
		return ErrorExitStatus
	}
	return status
}

type appCommand struct {
	podDir string
	uuid   string
	app    string
	log    *slog.Logger
}

func (c *appCommand) run(name string) (int, error) {
	switch name {
	case agentproto.ActionAppAdd:
		return 0, c.add()
	case agentproto.ActionAppStart:
		return c.start()
	case agentproto.ActionAppStop:
		return c.stop()
	case agentproto.ActionAppRm:
		return 0, c.remove()
	}
	return 0, fmt.Errorf("unknown app command %q", name)
}

// call runs an action in the guest agent and returns its exit status.
func (c *appCommand) call(action string, input []byte) (int, error) {
	c.log.Debug("sending the request to the guest agent", "action", action)
	return enter.Call(agentproto.OpenRequest{Action: action, App: c.app}, input)
}

// add prepares the app rkt added to the pod manifest, mounts its rootfs
// and volumes into QEMU's view of the shares, and has the guest install it.
func (c *appCommand) add() error {
	manifest, err := pod.LoadManifest(c.podDir)
	if err != nil {
		return err
	}
	if !pod.IsMutable(manifest) {
		return errors.New("the pod is not mutable: rkt app add works on a pod of rkt app sandbox")
	}
	if manifest.Apps.Get(types.ACName(c.app)) == nil {
		return fmt.Errorf("app %s is not in the pod manifest; rkt adds it there before it calls app/add", c.app)
	}
	state, err := pod.LoadRunState(c.podDir)
	if err != nil {
		return err
	}
	// Only the new app is checked: an app whose add failed stays in the
	// manifest (rkt does not take it out), and must not block the next.
	own := *manifest
	own.Apps = schema.AppList{*manifest.Apps.Get(types.ACName(c.app))}
	cfg, vols, err := pod.GuestConfig(c.podDir, &own, state.Options)
	if err != nil {
		return err
	}
	cfg.StopTimeoutSeconds = state.StopTimeoutSeconds
	cfg.Mutable, cfg.Volumes = true, true
	if state.ResolvConf != nil {
		vols.UseResolvConf(cfg, state.ResolvConf)
	}
	app, _ := cfg.App(c.app)
	state.Complete(&app)
	if app.MemoryMax > uint64(state.MemoryMiB)<<20 {
		return fmt.Errorf("the app's memory limit of %d bytes exceeds the pod VM's %d MiB of RAM", app.MemoryMax, state.MemoryMiB)
	}
	if !vols.HostsFromConfig() {
		if err := pod.WriteHosts(c.podDir, c.app, cfg.Hostname); err != nil {
			return err
		}
	}
	if err := vols.Prepare(&guestconfig.Pod{Apps: []guestconfig.App{app}}); err != nil {
		return err
	}

	pid, err := qemu.RunningPID(filepath.Join(c.podDir, pod.RuntimeDir, "qemu.pid"), c.uuid)
	if err != nil {
		return err
	}
	view := pod.AppView(c.podDir, c.app, fmt.Sprintf("%x", time.Now().UnixNano()), app.ReadOnlyRootfs)
	app.View = view.Path()
	apps := c.appsShare()
	if err := apps.AddViews(pid, []volume.View{view}); err != nil {
		return err
	}
	if err := c.addVolumeViews(pid, vols, app); err != nil {
		_ = apps.RemoveView(pid, view)
		return err
	}

	data, err := json.Marshal(guestconfig.AddedApp{App: app, Units: units.AppUnits(cfg, app)})
	if err != nil {
		return err
	}
	if status, err := c.call(agentproto.ActionAppAdd, data); err != nil || status != 0 {
		_ = apps.RemoveView(pid, view)
		if err == nil {
			err = fmt.Errorf("the guest agent returned status %d", status)
		}
		return err
	}
	return nil
}

// addVolumeViews mounts the views of the volumes the app mounts that are
// not mounted yet.
func (c *appCommand) addVolumeViews(pid int, vols *pod.Volumes, app guestconfig.App) error {
	share := vols.Share()
	if share == nil {
		return nil
	}
	var views []volume.View
	for _, v := range share.Views {
		for _, m := range app.Mounts {
			if !m.Config && m.View == v.Path() {
				views = append(views, v)
				break
			}
		}
	}
	return share.AddViews(pid, views)
}

func (c *appCommand) appsShare() *volume.Share {
	return &volume.Share{Dir: filepath.Join(c.podDir, pod.AppShareDir)}
}

// start starts the app. rkt marks the app started before it calls
// app/start, so a start that fails takes the mark back, and rkt shows the
// app as created again rather than running.
func (c *appCommand) start() (int, error) {
	status, err := c.call(agentproto.ActionAppStart, nil)
	if err != nil || status != 0 {
		if rerr := os.Remove(c.statusFile(c.app + "-started")); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			c.log.Warn("remove the started mark of the app failed", "error", rerr)
		}
	}
	return status, err
}

// statusFile returns the path of a file in rkt's status folder.
func (c *appCommand) statusFile(name string) string {
	return filepath.Join(c.podDir, pod.StatusDir, name)
}

// stop stops the app and waits until its exit status is recorded, so that
// rkt shows the app as exited once rkt app stop returns.
func (c *appCommand) stop() (int, error) {
	status, err := c.call(agentproto.ActionAppStop, nil)
	if err == nil && status == NotRunningStatus && manifestLocked(c.podDir) {
		// rkt app rm calls app/stop, holding the pod manifest's lock, and
		// means to accept status 5. But rkt 1.30.0 wraps the error before
		// it reads the status, so it fails on any status but 0. Return 0.
		c.log.Debug("the app is not running; returning 0 to rkt app rm")
		return 0, nil
	}
	if err != nil || status != 0 {
		return status, err
	}
	path := c.statusFile(c.app)
	for deadline := time.Now().Add(statusWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return 0, nil
		}
	}
	c.log.Warn("the app stopped, but its exit status is not recorded yet", "waited", statusWait)
	return 0, nil
}

// manifestLock is the lock file rkt holds while it changes the pod
// manifest of a mutable pod (rkt app add and rm).
const manifestLock = "pod.lck"

// manifestLocked reports whether another process holds the pod manifest's
// lock.
func manifestLocked(podDir string) bool {
	f, err := os.OpenFile(filepath.Join(podDir, manifestLock), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}

// remove has the guest remove the stopped app and then unmounts its
// rootfs from QEMU's view of the apps share, so that rkt can unmount and
// delete it.
func (c *appCommand) remove() error {
	if _, err := c.call(agentproto.ActionAppRm, nil); err != nil {
		return err
	}
	pid, err := qemu.RunningPID(filepath.Join(c.podDir, pod.RuntimeDir, "qemu.pid"), c.uuid)
	if err != nil {
		return err
	}
	// rkt 1.30.0 removes only the app's exit status: its created and
	// started marks would make an app added again under this name look
	// running before it starts. rkt writes the created mark anew on add.
	for _, mark := range []string{"-created", "-started"} {
		if err := os.Remove(c.statusFile(c.app + mark)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	share := c.appsShare()
	for _, access := range []string{"rw", "ro"} {
		entries, err := os.ReadDir(filepath.Join(share.Dir, access))
		if err != nil {
			return err
		}
		for _, e := range entries {
			if name, _, _ := strings.Cut(e.Name(), "."); name == c.app {
				v := volume.View{Name: e.Name(), ReadOnly: access == "ro"}
				if err := share.RemoveView(pid, v); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
