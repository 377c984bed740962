// Package guestconfig defines the pod configuration that the host side writes
// into the read-only config share and the guest side reads at boot.
//
// Everything the guest needs to run the apps travels in this file, byte-exact
// as JSON, never on the kernel command line.
package guestconfig

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Names shared by both sides. The mount tags and port names are fixed
// strings so that neither side parses anything the other chose freely.
const (
	// FileName is the name of the configuration file in the config share.
	FileName = "pod.json"
	// UnitsDir is the folder of systemd units in the config share.
	UnitsDir = "units"

	// ConfigTag is the 9p mount tag of the read-only config share.
	ConfigTag = "stage1-vm-config"
	// SystemTag is the 9p mount tag of the read-only guest system (the root).
	SystemTag = "stage1-vm-system"

	// StatusPort carries guest-to-host reports: sign of life, ready, exit statuses.
	StatusPort = "org.stage1-vm.status"
	// StdoutPort and StderrPort carry the apps' output to rkt run's stdout and stderr.
	StdoutPort = "org.stage1-vm.stdout"
	StderrPort = "org.stage1-vm.stderr"
	// AgentPort carries the framed agent protocol of enter sessions.
	AgentPort = "org.stage1-vm.agent"

	// GuestConfigDir is where the guest mounts the config share.
	GuestConfigDir = "/stage1-vm/config"
	// GuestAppsDir is where the guest mounts each app's rootfs, as GuestAppsDir/<app>/rootfs.
	GuestAppsDir = "/stage1-vm/apps"
	// GuestRunDir holds the guest's runtime sockets, in guest RAM.
	GuestRunDir = "/run/stage1-vm"
	// GuestInit is the path of the guest binary inside the guest system.
	GuestInit = "/stage1-vm/bin/stage1-vm-init"
)

// Pod is the guest's view of the pod.
type Pod struct {
	// UUID is the pod UUID as rkt gives it.
	UUID string `json:"uuid"`
	// Hostname is set in the guest before systemd starts.
	Hostname string `json:"hostname"`
	// Debug makes the guest log to the console.
	Debug bool `json:"debug"`
	// StopTimeoutSeconds is how long an app may take to exit after SIGTERM
	// before it gets SIGKILL; 0 means the default of 10 s.
	StopTimeoutSeconds int `json:"stopTimeoutSeconds,omitempty"`
	// Apps are started in this order.
	Apps []App `json:"apps"`
}

// App is one app of the pod as the guest runs it.
type App struct {
	// Name is the app name from the pod manifest (an appc AC name).
	Name string `json:"name"`
	// MountTag is the 9p mount tag of the app's rootfs share.
	MountTag string `json:"mountTag"`
	// Exec is the command line, exec[0] an absolute path inside the rootfs.
	Exec []string `json:"exec"`
	// Env is the full environment as NAME=value strings.
	Env []string `json:"env"`
	// WorkingDirectory is an absolute path inside the rootfs.
	WorkingDirectory string `json:"workingDirectory"`
	// UID, GID and SupplementaryGIDs are numeric ids inside the guest.
	// ReadOnlyRootfs is set when the host exports the rootfs read-only.
	ReadOnlyRootfs    bool     `json:"readOnlyRootfs,omitempty"`
	UID               uint32   `json:"uid"`
	GID               uint32   `json:"gid"`
	SupplementaryGIDs []uint32 `json:"supplementaryGIDs,omitempty"`
}

// RootfsPath returns where the guest mounts the app's rootfs.
func (a App) RootfsPath() string {
	return filepath.Join(GuestAppsDir, a.Name, "rootfs")
}

// App returns the app with the given name.
func (p *Pod) App(name string) (App, bool) {
	for _, a := range p.Apps {
		if a.Name == name {
			return a, true
		}
	}
	return App{}, false
}

// Load reads a pod configuration written by Write.
func Load(path string) (*Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read guest config: %w", err)
	}
	var pod Pod
	if err := json.Unmarshal(data, &pod); err != nil {
		return nil, fmt.Errorf("parse guest config %s: %w", path, err)
	}
	return &pod, nil
}

// Write stores the pod configuration as dir/pod.json.
func Write(dir string, pod *Pod) error {
	data, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		return fmt.Errorf("encode guest config: %w", err)
	}
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write guest config: %w", err)
	}
	return nil
}
