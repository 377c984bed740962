// Package pod reads what rkt prepared in the pod directory and turns the pod
// manifest into the guest's configuration.
package pod

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
)

// Paths relative to the pod directory, as rkt 1.30.0 lays it out.
const (
	ManifestFile     = "pod"
	PIDFile          = "pid"
	Stage1Rootfs     = "stage1/rootfs"
	StatusDir        = "stage1/rootfs/rkt/status"
	SupervisorStatus = "stage1/rootfs/rkt/supervisor-status"
	// RuntimeDir holds this stage1's per-pod files: the config share and
	// the sockets of the guest's ports. The guest can reach only its
	// "config" folder, read-only.
	RuntimeDir = "stage1-vm"
)

// AppRootfs returns the rootfs of an app relative to the pod directory.
func AppRootfs(app string) string {
	return filepath.Join(Stage1Rootfs, "opt/stage2", app, "rootfs")
}

// LoadManifest reads and validates the pod manifest in podDir.
func LoadManifest(podDir string) (*schema.PodManifest, error) {
	path := filepath.Join(podDir, ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pod manifest: %w", err)
	}
	pm, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pm, nil
}

// ParseManifest validates a pod manifest with the appc schema.
func ParseManifest(data []byte) (pm *schema.PodManifest, err error) {
	// The appc schema panics on some malformed manifests, such as an
	// isolator without a value.
	defer func() {
		if r := recover(); r != nil {
			pm = nil
			err = fmt.Errorf("invalid pod manifest: the appc schema failed on it (%v)", r)
			if detail := isolatorProblem(data); detail != "" {
				err = fmt.Errorf("invalid pod manifest: %s", detail)
			}
		}
	}()
	return parseManifest(data)
}

func parseManifest(data []byte) (*schema.PodManifest, error) {
	var pm schema.PodManifest
	if err := json.Unmarshal(data, &pm); err != nil {
		if errors.Is(err, types.ErrInvalidIsolator) || errors.Is(err, types.ErrIncompatibleIsolator) {
			if detail := isolatorProblem(data); detail != "" {
				return nil, fmt.Errorf("invalid pod manifest: %w: %s", err, detail)
			}
		}
		return nil, fmt.Errorf("invalid pod manifest: %w", err)
	}
	if pm.ACKind != schema.PodManifestKind {
		return nil, fmt.Errorf("invalid pod manifest: acKind is %q, expected %q", pm.ACKind, schema.PodManifestKind)
	}
	return &pm, nil
}

// isolatorProblem names the isolators behind the appc schema's bare
// "invalid isolator" error: unknown names, and a retain set next to a
// remove set.
func isolatorProblem(data []byte) string {
	type named struct {
		Name string `json:"name"`
	}
	var loose struct {
		Apps []struct {
			Name string `json:"name"`
			App  struct {
				Isolators []json.RawMessage `json:"isolators"`
			} `json:"app"`
		} `json:"apps"`
	}
	if json.Unmarshal(data, &loose) != nil {
		return ""
	}
	var problems []string
	for _, app := range loose.Apps {
		names := map[string]bool{}
		for _, raw := range app.App.Isolators {
			var n named
			_ = json.Unmarshal(raw, &n)
			names[n.Name] = true
			var withValue struct {
				Value *json.RawMessage `json:"value"`
			}
			if json.Unmarshal(raw, &withValue) == nil && withValue.Value == nil {
				problems = append(problems, fmt.Sprintf("app %s: isolator %q has no value", app.Name, n.Name))
				continue
			}
			if unknownIsolator(raw) {
				problems = append(problems, fmt.Sprintf("app %s: isolator %q is unknown", app.Name, n.Name))
			}
		}
		if names[types.LinuxCapabilitiesRetainSetName] && names[types.LinuxCapabilitiesRevokeSetName] {
			problems = append(problems, fmt.Sprintf("app %s: %s and %s cannot be used together", app.Name, types.LinuxCapabilitiesRetainSetName, types.LinuxCapabilitiesRevokeSetName))
		}
		if names[types.LinuxSeccompRetainSetName] && names[types.LinuxSeccompRemoveSetName] {
			problems = append(problems, fmt.Sprintf("app %s: %s and %s cannot be used together", app.Name, types.LinuxSeccompRetainSetName, types.LinuxSeccompRemoveSetName))
		}
	}
	return strings.Join(problems, "; ")
}

// unknownIsolator reports whether the appc schema has no type for the
// isolator in raw.
func unknownIsolator(raw json.RawMessage) (unknown bool) {
	defer func() {
		if recover() != nil {
			unknown = false
		}
	}()
	var iso types.Isolator
	return json.Unmarshal(raw, &iso) == nil && iso.Value() == nil
}

// IsMutable reports whether rkt prepared the pod with `rkt app sandbox`.
func IsMutable(pm *schema.PodManifest) bool {
	v, ok := pm.Annotations.Get("coreos.com/rkt/stage1/mutable")
	return ok && v == "true"
}

// WriteStatus records an app's exit status where rkt reads it.
func WriteStatus(podDir, app string, status int) error {
	path := filepath.Join(podDir, StatusDir, app)
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d", status)), 0o644); err != nil {
		return fmt.Errorf("write exit status of app %s: %w", app, err)
	}
	return nil
}

// MarkReady creates the supervisor-status symlink that `rkt status
// --wait-ready` and the rkt app commands wait for.
func MarkReady(podDir string) error {
	path := filepath.Join(podDir, SupervisorStatus)
	if err := os.Symlink("ready", path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("mark pod ready: %w", err)
	}
	return nil
}

// WritePID records the process that holds the pod; rkt takes the file's
// mtime as the pod's start time.
func WritePID(podDir string, pid int) error {
	path := filepath.Join(podDir, PIDFile)
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d", pid)), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}
