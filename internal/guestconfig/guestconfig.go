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
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/seccomp"
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
	// VolumesTag is the 9p mount tag of the share that holds every volume.
	VolumesTag = "stage1-vm-volumes"
	// AppsTag is the 9p mount tag of the share that holds every app's rootfs.
	AppsTag = "stage1-vm-apps"
	// JournalTag is the 9p mount tag of the writable share that holds the
	// guest journal's folder, GuestJournalDir/<machine id>.
	JournalTag = "stage1-vm-journal"

	// StatusPort carries guest-to-host reports: sign of life, ready, exit statuses.
	StatusPort = "org.stage1-vm.status"
	// StdoutPort and StderrPort carry the apps' output to rkt run's stdout and stderr.
	StdoutPort = "org.stage1-vm.stdout"
	StderrPort = "org.stage1-vm.stderr"
	// StdinPort carries rkt run's stdin to the app of an --interactive pod.
	StdinPort = "org.stage1-vm.stdin"
	// AgentPort carries the framed agent protocol of enter sessions.
	AgentPort = "org.stage1-vm.agent"

	// GuestConfigDir is where the guest mounts the config share.
	GuestConfigDir = "/stage1-vm/config"
	// GuestVolumesDir is where the guest mounts the volume share.
	GuestVolumesDir = "/stage1-vm/volumes"
	// GuestAppsDir is where the guest mounts each app's rootfs, as GuestAppsDir/<app>/rootfs.
	GuestAppsDir = "/stage1-vm/apps"
	// GuestAppShareDir is where the guest mounts the apps share, whose
	// views it binds to each app's rootfs.
	GuestAppShareDir = "/stage1-vm/app-share"
	// GuestAddedAppsDir holds the configuration of each app added at run
	// time, as <app>.json, in guest RAM.
	GuestAddedAppsDir = GuestRunDir + "/apps"
	// GuestJournalDir is journald's persistent folder in the guest. It is
	// a tmpfs that holds only the mount point of the journal share.
	GuestJournalDir = "/var/log/journal"
	// GuestRunDir holds the guest's runtime sockets, in guest RAM.
	GuestRunDir = "/run/stage1-vm"
	// GuestInit is the path of the guest binary inside the guest system.
	GuestInit = "/stage1-vm/bin/stage1-vm-init"
)

// DefaultPath is the PATH the appc specification gives apps that set none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Pod is the guest's view of the pod.
type Pod struct {
	// UUID is the pod UUID as rkt gives it.
	UUID string `json:"uuid"`
	// Hostname is set in the guest before systemd starts.
	Hostname string `json:"hostname"`
	// Debug makes the guest log to the console.
	Debug bool `json:"debug"`
	// DisablePaths leaves /proc and /sys of the apps unrestricted
	// (--disable-paths).
	DisablePaths bool `json:"disablePaths,omitempty"`
	// Volumes is set when the host exports the volume share.
	Volumes bool `json:"volumes,omitempty"`
	// Mutable is set for a pod of rkt app sandbox: apps come and go at run
	// time, and their exits never end the pod.
	Mutable bool `json:"mutable,omitempty"`
	// StopTimeoutSeconds is how long an app may take to exit after SIGTERM
	// before it gets SIGKILL; 0 means the default of 10 s.
	StopTimeoutSeconds int `json:"stopTimeoutSeconds,omitempty"`
	// Apps are started in this order.
	Apps []App `json:"apps"`
	// Interfaces are the NICs to configure before systemd starts, matched
	// to the guest's devices by MAC address. The guest always has lo.
	Interfaces []Interface `json:"interfaces,omitempty"`
}

// Interface is the configuration of one guest NIC.
type Interface struct {
	// Name is the name the NIC gets, such as eth0.
	Name string `json:"name"`
	// MAC is the NIC's hardware address, which identifies it.
	MAC string `json:"mac"`
	// MTU is in bytes; 0 keeps the device's default.
	MTU       int       `json:"mtu,omitempty"`
	Addresses []Address `json:"addresses,omitempty"`
	// Routes are added in order, after the addresses.
	Routes []Route `json:"routes,omitempty"`
}

// Address is an IP address with its prefix length.
type Address struct {
	// CIDR is the address and prefix length, such as 172.16.28.2/24.
	CIDR string `json:"cidr"`
	// NoPrefixRoute keeps the kernel from adding the route to the
	// address's subnet, for networks such as ptp that route it otherwise.
	NoPrefixRoute bool `json:"noPrefixRoute,omitempty"`
}

// Route is a route through a NIC.
type Route struct {
	// Dst is the destination in CIDR notation; empty is the default route.
	Dst string `json:"dst,omitempty"`
	// Gateway is empty for a route to hosts on the link.
	Gateway string `json:"gateway,omitempty"`
	// Source is the preferred source address, if any.
	Source string `json:"source,omitempty"`
}

// Mount is a volume mounted into an app's rootfs.
type Mount struct {
	// View is the volume's path inside the volume share, "rw/<volume>" or
	// "ro/<volume>". The host enforces a read-only view.
	View string `json:"view"`
	// Target is an absolute path inside the app's rootfs, resolved there.
	Target string `json:"target"`
	// ReadOnly mounts the view read-only in the guest too.
	ReadOnly bool `json:"readOnly,omitempty"`
	// File is set when the volume is a single file.
	File bool `json:"file,omitempty"`
	// Config is set when View is a file of the config share, such as the
	// pod's resolv.conf, rather than a view of the volume share.
	Config bool `json:"config,omitempty"`
}

// App is one app of the pod as the guest runs it.
type App struct {
	// Name is the app name from the pod manifest (an appc AC name).
	Name string `json:"name"`
	// View is the app's rootfs in the apps share, "rw/<name>" or
	// "ro/<name>". The host enforces a read-only view.
	View string `json:"view"`
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
	// Mounts are made in this order, parents first.
	Mounts []Mount `json:"mounts,omitempty"`
	// Stdin connects the app's stdin to rkt run's (--interactive).
	Stdin bool `json:"stdin,omitempty"`
	// StdinMode, StdoutMode and StderrMode come from rkt's per-app
	// annotations; empty is the default. StdioModes applies the defaults
	// and Stdin.
	StdinMode  StreamMode `json:"stdinMode,omitempty"`
	StdoutMode StreamMode `json:"stdoutMode,omitempty"`
	StderrMode StreamMode `json:"stderrMode,omitempty"`

	// MemoryMax is the app's memory limit in bytes, 0 for none.
	MemoryMax uint64 `json:"memoryMax,omitempty"`
	// CPUMillis is the app's CPU limit in thousandths of a CPU, 0 for none.
	CPUMillis uint64 `json:"cpuMillis,omitempty"`
	// CPUWeight is the app's cgroup CPU weight, 0 for the default.
	CPUWeight uint64 `json:"cpuWeight,omitempty"`
	// OOMScoreAdjust is the app's oom_score_adj when set.
	OOMScoreAdjust *int `json:"oomScoreAdjust,omitempty"`

	// RestrictCapabilities limits the app's bounding set to Capabilities,
	// given as capability numbers.
	RestrictCapabilities bool   `json:"restrictCapabilities,omitempty"`
	Capabilities         []uint `json:"capabilities,omitempty"`
	// NoNewPrivileges sets the no_new_privs bit before the app starts.
	NoNewPrivileges bool `json:"noNewPrivileges,omitempty"`
	// Seccomp is the app's system call filter; nil for none.
	Seccomp *seccomp.Filter `json:"seccomp,omitempty"`

	// PreStart and PostStop are the exec lines of the app's event
	// handlers, empty when the app has none.
	PreStart []string `json:"preStart,omitempty"`
	PostStop []string `json:"postStop,omitempty"`
}

// MachineID returns the guest's machine id for a pod: the UUID without
// dashes, as rkt's default stage1 derives it. journald names the journal's
// folder after it.
func MachineID(uuid string) string {
	return strings.ReplaceAll(uuid, "-", "")
}

// HasResourceLimits reports whether the app has a memory or CPU setting,
// which app-exec applies in a cgroup of the app's own.
func (a App) HasResourceLimits() bool {
	return a.MemoryMax > 0 || a.CPUMillis > 0 || a.CPUWeight > 0
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

// AppUnit returns the unit name of an app, which the host writes and the
// guest agent starts and stops. App names are appc AC names (lowercase
// letters, digits and dashes), which are valid in unit names.
func AppUnit(app string) string {
	return "app-" + app + ".service"
}

// AddedApp is the host's request to the guest agent to add an app to a
// mutable pod.
type AddedApp struct {
	App App `json:"app"`
	// Units are the app's systemd units by file name.
	Units map[string]string `json:"units"`
}

// LoadApp returns the configuration of an app in the guest: from the pod
// configuration, or else from the apps added at run time.
func LoadApp(name string) (*Pod, App, error) {
	pod, err := Load(filepath.Join(GuestConfigDir, FileName))
	if err != nil {
		return nil, App{}, err
	}
	if app, ok := pod.App(name); ok {
		return pod, app, nil
	}
	data, err := os.ReadFile(filepath.Join(GuestAddedAppsDir, name+".json"))
	if os.IsNotExist(err) {
		return nil, App{}, fmt.Errorf("app %q is not in the pod", name)
	}
	if err != nil {
		return nil, App{}, fmt.Errorf("read the configuration of app %s: %w", name, err)
	}
	var app App
	if err := json.Unmarshal(data, &app); err != nil {
		return nil, App{}, fmt.Errorf("parse the configuration of app %s: %w", name, err)
	}
	return pod, app, nil
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
