package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/hashicorp/go-multierror"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// Plugin folders. rkt 1.30.0 looks for plugins in localConfig/net.d, then
// in UserPluginDir, then in the stage1 image's BuiltinPluginDir, and so
// does stage1-vm.
const (
	UserPluginDir = "/usr/lib/rkt/plugins/net"
	// BuiltinPluginDir is relative to the pod directory.
	BuiltinPluginDir = "stage1/rootfs/usr/lib/rkt/plugins/net"
)

// PortMapping is a forwarded port, in the form of the portMappings
// capability of CNI's portmap plugin.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Pod is the identity of a pod for attaching and detaching its networks.
type Pod struct {
	// Dir is the pod directory.
	Dir  string
	UUID string
	// LocalConfig is rkt's --local-config folder; it may be empty.
	LocalConfig string
	Log         *slog.Logger
}

// Attachment is a pod's networks once attached.
type Attachment struct {
	// Interfaces are the guest's NICs, in the order of Taps.
	Interfaces []guestconfig.Interface
	// Taps are the tap devices for QEMU, one per interface.
	Taps []*os.File
	// DNS is the DNS configuration of the first network whose plugins
	// returned one; it may be empty.
	DNS cnitypes.DNS
	// HostIP is the host's address on the network that forwarded ports go
	// to (the gateway of its first IPv4 address), where apps reach rkt's
	// metadata service. It is nil when the plugins gave no gateway.
	HostIP net.IP
}

// Close closes the tap files of the run entrypoint. QEMU keeps its own.
func (a *Attachment) Close() {
	for _, t := range a.Taps {
		t.Close()
	}
}

// pluginPaths returns the plugin folders in search order, absolute.
func (p Pod) pluginPaths() ([]string, error) {
	builtin, err := filepath.Abs(filepath.Join(p.Dir, BuiltinPluginDir))
	if err != nil {
		return nil, err
	}
	var paths []string
	if p.LocalConfig != "" {
		paths = append(paths, filepath.Join(p.LocalConfig, NetDir))
	}
	return append(paths, UserPluginDir, builtin), nil
}

// CheckPlugins reports the first plugin of nets that is in no plugin folder.
func (p Pod) CheckPlugins(nets []Network, ports []PortMapping) error {
	paths, err := p.pluginPaths()
	if err != nil {
		return err
	}
	for _, n := range nets {
		list, err := libcni.ConfListFromBytes(n.ConfList)
		if err != nil {
			return err
		}
		types := []string{}
		for _, plugin := range list.Plugins {
			types = append(types, plugin.Network.Type)
			if plugin.Network.IPAM.Type != "" {
				types = append(types, plugin.Network.IPAM.Type)
			}
		}
		if len(ports) > 0 {
			types = append(types, "portmap")
		}
		for _, t := range types {
			if _, err := invoke.FindInPath(t, paths); err != nil {
				return fmt.Errorf("network %q (%s) needs the CNI plugin %q, which is in none of %s: install it in one of them",
					n.Name, n.File, t, strings.Join(paths, ", "))
			}
		}
	}
	return nil
}

// Up creates the pod's network namespace, attaches nets in order as eth0,
// eth1... with the CNI plugins, and mirrors each to a tap. Ports are
// forwarded to the first network that masquerades, or else to the last,
// as in rkt. Args are the CNI_ARGS of each network by name.
//
// Before each step Up records in the pod directory what Down must undo, so
// that Down, in the run entrypoint or in gc, releases everything even
// after a crash. When Up fails it calls Down itself.
func (p Pod) Up(ctx context.Context, nets []Network, args map[string][][2]string, ports []PortMapping) (_ *Attachment, err error) {
	if len(ports) > 0 && len(nets) == 0 {
		return nil, errors.New("the pod forwards ports but has no network: use --net=default or another network")
	}
	paths, err := p.pluginPaths()
	if err != nil {
		return nil, err
	}
	st := &state{NetNS: NetNSPath(p.UUID)}
	att := &Attachment{}
	defer func() {
		if err != nil {
			att.Close()
			if derr := p.Down(context.Background()); derr != nil {
				err = multierror.Append(err, fmt.Errorf("and its teardown: %w", derr))
			}
		}
	}()
	if err := p.saveState(st); err != nil {
		return nil, err
	}
	if err := createNetNS(st.NetNS); err != nil {
		return nil, err
	}

	forward := forwardTarget(nets)
	cni := libcni.NewCNIConfig(paths, nil)
	var infos []netInfo
	for i, n := range nets {
		a := attached{Name: n.Name, File: n.File, IfName: fmt.Sprintf("eth%d", i), ConfList: n.ConfList, Args: withIgnoreUnknown(args[n.Name])}
		if i == forward && len(ports) > 0 {
			if a.ConfList, err = n.withPortmap(); err != nil {
				return nil, fmt.Errorf("add port forwarding to network %q: %w", n.Name, err)
			}
			a.Ports = ports
		}
		st.Networks = append(st.Networks, a)
		if err := p.saveState(st); err != nil {
			return nil, err
		}
		list, err := libcni.ConfListFromBytes(a.ConfList)
		if err != nil {
			return nil, fmt.Errorf("network %q (%s): %w", n.Name, n.File, err)
		}
		p.Log.Debug("adding network", "network", n.Name, "interface", a.IfName, "file", n.File)
		res, err := cni.AddNetworkList(ctx, list, a.runtimeConf(p.UUID, st.NetNS))
		if err != nil {
			return nil, fmt.Errorf("add network %q (%s) as %s: %w", n.Name, n.File, a.IfName, err)
		}
		infos = append(infos, newNetInfo(a, list, res, paths))
		if r, err := current.NewResultFromResult(res); err == nil {
			if len(att.DNS.Nameservers) == 0 && len(r.DNS.Nameservers) > 0 {
				att.DNS = r.DNS
			}
			if i == forward {
				att.HostIP = firstGateway(r)
			}
		}
	}

	for i, a := range st.Networks {
		tap, iface, err := attachTap(st.NetNS, a.IfName, fmt.Sprintf("tap%d", i))
		if err != nil {
			return nil, err
		}
		att.Taps = append(att.Taps, tap)
		att.Interfaces = append(att.Interfaces, iface)
	}
	if err := saveNetInfo(p.Dir, infos); err != nil {
		return nil, err
	}
	return att, nil
}

// Down detaches every network that the pod directory's state lists, with
// CNI DEL in reverse order, then removes the network namespace and the
// state. net-info.json stays until gc, so that `rkt list` shows an exited
// pod's addresses, as with rkt's default stage1. Down is safe to repeat,
// and a pod without networks has nothing to do. When a DEL fails, the
// state stays, so that the next Down (in gc) runs the DELs again.
func (p Pod) Down(ctx context.Context) error {
	st, err := p.loadState()
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	paths, err := p.pluginPaths()
	if err != nil {
		return err
	}

	netns := st.NetNS
	if _, err := os.Stat(netns); err != nil {
		// Plugins clean up the host side without the namespace.
		netns = ""
	}
	cni := libcni.NewCNIConfig(paths, nil)
	var result *multierror.Error
	for i := len(st.Networks) - 1; i >= 0; i-- {
		a := st.Networks[i]
		list, err := libcni.ConfListFromBytes(a.ConfList)
		if err == nil {
			p.Log.Debug("deleting network", "network", a.Name, "interface", a.IfName)
			err = cni.DelNetworkList(ctx, list, a.runtimeConf(p.UUID, netns))
		}
		if err != nil {
			result = multierror.Append(result, fmt.Errorf("delete network %q (%s) of pod %s: %w", a.Name, a.IfName, p.UUID, err))
		}
	}

	// The namespace goes even when a DEL failed: a DEL repeated later
	// releases the host side without it.
	if err := removeNetNS(st.NetNS); err != nil {
		result = multierror.Append(result, err)
	}
	if result != nil {
		return result
	}
	return os.RemoveAll(filepath.Join(p.Dir, StateDir))
}

// withIgnoreUnknown adds IgnoreUnknown=1 to non-empty CNI_ARGS, as CNI's
// conventions ask of runtimes: a plugin of a chain rejects the arguments
// meant for another, such as bridge with host-local's IP, without it.
func withIgnoreUnknown(args [][2]string) [][2]string {
	if len(args) == 0 {
		return nil
	}
	for _, kv := range args {
		if kv[0] == "IgnoreUnknown" {
			return args
		}
	}
	return append([][2]string{{"IgnoreUnknown", "1"}}, args...)
}

// firstGateway returns the gateway of the result's first IPv4 address.
func firstGateway(r *current.Result) net.IP {
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil && ip.Gateway != nil {
			return ip.Gateway
		}
	}
	return nil
}

// forwardTarget returns the index of the network that forwarded ports go
// to: the first that masquerades, or else the last, as in rkt.
func forwardTarget(nets []Network) int {
	for i, n := range nets {
		if n.IPMasq {
			return i
		}
	}
	return len(nets) - 1
}

// StateDir is the pod directory's folder for the record of what Down must
// undo. The guest cannot write there, because only its shares reach it.
const StateDir = "stage1-vm-net"

// state is the record that Down reads, written before each step of Up.
type state struct {
	NetNS    string     `json:"netns"`
	Networks []attached `json:"networks"`
}

// attached is one network as Up passed it to the plugins.
type attached struct {
	Name     string          `json:"name"`
	File     string          `json:"file"`
	IfName   string          `json:"ifName"`
	ConfList json.RawMessage `json:"confList"`
	Args     [][2]string     `json:"args,omitempty"`
	Ports    []PortMapping   `json:"ports,omitempty"`
}

func (a attached) runtimeConf(uuid, netns string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: uuid, NetNS: netns, IfName: a.IfName, Args: a.Args}
	if len(a.Ports) > 0 {
		rt.CapabilityArgs = map[string]interface{}{"portMappings": a.Ports}
	}
	return rt
}

func (p Pod) saveState(st *state) error {
	dir := filepath.Join(p.Dir, StateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	// Written whole and renamed, so that a crash never leaves half a state.
	tmp := filepath.Join(dir, "state.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

func (p Pod) loadState() (*state, error) {
	data, err := os.ReadFile(filepath.Join(p.Dir, StateDir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("invalid network state of pod %s: %w", p.UUID, err)
	}
	if st.NetNS != NetNSPath(p.UUID) {
		return nil, fmt.Errorf("invalid network state of pod %s: namespace %q is not the pod's", p.UUID, st.NetNS)
	}
	return &st, nil
}

// NetInfoFile is the file in the pod directory where `rkt list` and
// `rkt status` read the pod's networks.
const NetInfoFile = "net-info.json"

// netInfo is one entry of net-info.json, in the format of rkt 1.30.0.
type netInfo struct {
	NetName    string `json:"netName"`
	ConfPath   string `json:"netConf"`
	PluginPath string `json:"pluginPath"`
	IfName     string `json:"ifName"`
	IP         net.IP `json:"ip"`
	Args       string `json:"args"`
	// Mask is written as an address, as rkt does.
	Mask net.IP `json:"mask"`
}

func newNetInfo(a attached, list *libcni.NetworkConfigList, res cnitypes.Result, paths []string) netInfo {
	info := netInfo{NetName: a.Name, ConfPath: a.File, IfName: a.IfName}
	var args []string
	for _, kv := range a.Args {
		if kv != [2]string{"IgnoreUnknown", "1"} {
			args = append(args, kv[0]+"="+kv[1])
		}
	}
	info.Args = strings.Join(args, ";")
	if path, err := invoke.FindInPath(list.Plugins[0].Network.Type, paths); err == nil {
		info.PluginPath = path
	}
	// A result that does not convert leaves the address out; rkt does the
	// same for a plugin that returns no IPv4 address.
	if r, err := current.NewResultFromResult(res); err == nil {
		for _, ip := range r.IPs {
			if v4 := ip.Address.IP.To4(); v4 != nil {
				info.IP = v4
				info.Mask = net.IP(ip.Address.Mask)
				break
			}
		}
	}
	return info
}

func saveNetInfo(dir string, infos []netInfo) error {
	data, err := json.Marshal(infos)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, NetInfoFile), data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", NetInfoFile, err)
	}
	return nil
}
