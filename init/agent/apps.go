package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/stage1-vm/stage1-vm/init/approot"
	"github.com/stage1-vm/stage1-vm/internal/agentproto"
	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// The app actions of a mutable pod (rkt app add, start, stop and rm). The
// host checks the app against the pod manifest and prepares its rootfs
// view. The guest keeps each added app's configuration in guest RAM and
// runs the app as a systemd unit, like the apps the pod booted with.

// Systemctl is the path of systemctl in the guest system.
const Systemctl = "/bin/systemctl"

// UnitDir is the folder of an added app's units, which systemd reads on
// daemon-reload.
const UnitDir = "/run/systemd/system"

// NotRunningStatus is the exit status of app-stop for an app that is not
// running, which rkt app stop reports as such.
const NotRunningStatus = 5

// maxAddedApp bounds the configuration of an added app; its command line
// and environment may each take up to a few hundred KiB.
const maxAddedApp = 8 << 20

// app returns the configuration of an app of the pod, added or not.
func (a *Agent) app(name string) (guestconfig.App, bool) {
	if app, ok := a.pod.App(name); ok {
		return app, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	app, ok := a.added[name]
	return app, ok
}

// runAppAction runs one app action and returns its exit status.
func (a *Agent) runAppAction(s *agentproto.Stream, req agentproto.OpenRequest) (int, error) {
	if !a.pod.Mutable {
		return 0, errors.New("the pod is not mutable: rkt app commands work on a pod of rkt app sandbox")
	}
	// App actions run one at a time. rkt locks the pod manifest for add
	// and rm, but not for start and stop.
	a.appActionMu.Lock()
	defer a.appActionMu.Unlock()
	switch req.Action {
	case agentproto.ActionAppAdd:
		return 0, a.addApp(s, req.App)
	case agentproto.ActionAppStart:
		if _, ok := a.app(req.App); !ok {
			return 0, fmt.Errorf("app %q is not in the pod", req.App)
		}
		return 0, a.startApp(req.App)
	case agentproto.ActionAppStop:
		if _, ok := a.app(req.App); !ok {
			// An app whose add failed is in rkt's manifest, not here.
			return NotRunningStatus, nil
		}
		return a.stopApp(req.App)
	case agentproto.ActionAppRm:
		return 0, a.removeApp(req.App)
	}
	return 0, fmt.Errorf("unknown app action %q", req.Action)
}

// addApp reads the app's configuration from the stream, mounts its rootfs
// and installs its units, which systemd loads but does not start.
func (a *Agent) addApp(s *agentproto.Stream, name string) error {
	data, err := readInput(s, maxAddedApp)
	if err != nil {
		return err
	}
	var added guestconfig.AddedApp
	if err := json.Unmarshal(data, &added); err != nil {
		return fmt.Errorf("parse the configuration of app %s: %w", name, err)
	}
	app := added.App
	if app.Name != name {
		return fmt.Errorf("the configuration is for app %q, not %q", app.Name, name)
	}
	if _, ok := a.app(name); ok {
		return fmt.Errorf("app %q is already in the pod", name)
	}
	for file := range added.Units {
		if filepath.Base(file) != file || !strings.HasSuffix(file, ".service") {
			return fmt.Errorf("invalid unit name %q for app %s", file, name)
		}
	}

	if err := os.MkdirAll(guestconfig.GuestAddedAppsDir, 0o700); err != nil {
		return err
	}
	config, err := json.Marshal(app)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(guestconfig.GuestAddedAppsDir, name+".json"), config, 0o600); err != nil {
		return fmt.Errorf("store the configuration of app %s: %w", name, err)
	}
	if err := approot.Attach(a.pod, app, guestconfig.GuestAppShareDir); err != nil {
		_ = approot.Detach(name)
		return fmt.Errorf("mount the rootfs of app %s: %w", name, err)
	}
	for file, content := range added.Units {
		if err := os.WriteFile(filepath.Join(UnitDir, file), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write unit %s: %w", file, err)
		}
	}
	if err := systemctl("daemon-reload"); err != nil {
		return err
	}
	a.mu.Lock()
	a.added[name] = app
	a.addedUnits[name] = mapKeys(added.Units)
	a.streams[name] = &sync.WaitGroup{}
	delete(a.exited, name)
	a.mu.Unlock()
	a.log.Info("app added", "app", name)
	return nil
}

// startApp starts the app's unit and returns once systemd has started it.
func (a *Agent) startApp(name string) error {
	if active, err := unitActive(name); err != nil {
		return err
	} else if active {
		return fmt.Errorf("app %s is already running", name)
	}
	a.mu.Lock()
	delete(a.exited, name)
	a.mu.Unlock()
	return systemctl("start", guestconfig.AppUnit(name))
}

// stopApp stops the app's unit, which reports the app's exit status on
// the way, and returns NotRunningStatus if the app was not running.
func (a *Agent) stopApp(name string) (int, error) {
	active, err := unitActive(name)
	if err != nil {
		return 0, err
	}
	if !active {
		return NotRunningStatus, nil
	}
	return 0, systemctl("stop", guestconfig.AppUnit(name))
}

// removeApp removes a stopped app: its units, its rootfs mount and its
// configuration.
func (a *Agent) removeApp(name string) error {
	a.mu.Lock()
	_, added := a.added[name]
	units := a.addedUnits[name]
	a.mu.Unlock()
	if !added {
		if _, ok := a.pod.App(name); ok {
			return fmt.Errorf("app %s was in the pod at its start; only apps added with rkt app add can be removed", name)
		}
		// An app whose add failed: rkt removes what it made itself.
		a.log.Info("app removed before the guest knew it", "app", name)
		return nil
	}
	if active, err := unitActive(name); err != nil {
		return err
	} else if active {
		return fmt.Errorf("app %s is still running; stop it first", name)
	}

	for _, file := range units {
		if err := os.Remove(filepath.Join(UnitDir, file)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove unit %s: %w", file, err)
		}
	}
	if err := systemctl("daemon-reload"); err != nil {
		return err
	}
	// A failed unit stays known to systemd until this.
	_ = systemctl("reset-failed", guestconfig.AppUnit(name))

	if err := approot.Detach(name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(guestconfig.GuestAddedAppsDir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}

	a.mu.Lock()
	delete(a.added, name)
	delete(a.addedUnits, name)
	delete(a.streams, name)
	delete(a.exited, name)
	a.mu.Unlock()
	a.log.Info("app removed", "app", name)
	return nil
}

// unitActive reports whether the app's unit runs or is starting or
// stopping.
func unitActive(name string) (bool, error) {
	out, err := exec.Command(Systemctl, "show", "--property=ActiveState", "--value", guestconfig.AppUnit(name)).Output()
	if err != nil {
		return false, fmt.Errorf("read the state of app %s: %w", name, err)
	}
	switch state := strings.TrimSpace(string(out)); state {
	case "active", "activating", "deactivating", "reloading":
		return true, nil
	default:
		return false, nil
	}
}

func systemctl(args ...string) error {
	out, err := exec.Command(Systemctl, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// readInput reads the stream's stdin frames until eof, at most limit bytes.
func readInput(s *agentproto.Stream, limit int) ([]byte, error) {
	var buf bytes.Buffer
	for {
		f, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("the stream ended before its input did")
			}
			return nil, err
		}
		switch f.Type {
		case agentproto.Stdin:
			if buf.Len()+len(f.Payload) > limit {
				return nil, fmt.Errorf("the input exceeds %d bytes", limit)
			}
			buf.Write(f.Payload)
		case agentproto.EOF:
			return buf.Bytes(), nil
		case agentproto.Close:
			return nil, errors.New("the host closed the stream before the end of its input")
		}
	}
}

func mapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
