package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// NetDir is the folder of network configurations under rkt's local
// configuration folder (--local-config), as rkt 1.30.0 reads it.
const NetDir = "net.d"

// chainVersion is the CNI version a network is run with when the portmap
// plugin is chained to a configuration that declares an older version:
// chaining needs 0.3.0 or later.
const chainVersion = "0.4.0"

// builtinNetworks are rkt 1.30.0's built-in networks, which user networks
// of the same name replace. Their subnets are rkt's. The file names decide
// their place in the attach order, as a file in net.d would.
var builtinNetworks = []struct{ file, conf string }{
	{"99-default.conf", `{
	"cniVersion": "0.4.0",
	"name": "default",
	"type": "ptp",
	"ipMasq": true,
	"ipam": {
		"type": "host-local",
		"subnet": "172.16.28.0/24",
		"routes": [{"dst": "0.0.0.0/0"}]
	}
}`},
	{"99-default-restricted.conf", `{
	"cniVersion": "0.4.0",
	"name": "default-restricted",
	"type": "ptp",
	"ipMasq": false,
	"ipam": {
		"type": "host-local",
		"subnet": "172.31.0.0/16"
	}
}`},
}

// Network is one network configuration to attach.
type Network struct {
	Name string
	// File is the configuration file, or "builtin:<file>" for a built-in network.
	File string
	// ConfList is the network as a CNI configuration list in JSON. A
	// single-plugin .conf is converted to a list of one.
	ConfList []byte
	// IPMasq reports whether the first plugin masquerades, which makes the
	// network the one that forwarded ports go to, as in rkt.
	IPMasq bool
}

// LoadNetworks returns the networks that spec requests, sorted by file
// name, from the built-in ones and localConfig/net.d/*.conf and
// *.conflist. A network in net.d replaces a built-in one of the same name.
func LoadNetworks(spec Spec, localConfig string) ([]Network, error) {
	if spec.Mode != ModeContained {
		return nil, nil
	}
	byName := map[string]Network{}
	for _, b := range builtinNetworks {
		n, err := parseNetwork("builtin:"+b.file, []byte(b.conf))
		if err != nil {
			return nil, fmt.Errorf("built-in network %s: %w", b.file, err)
		}
		byName[n.Name] = n
	}
	if localConfig != "" {
		user, err := loadDir(filepath.Join(localConfig, NetDir))
		if err != nil {
			return nil, err
		}
		for _, n := range user {
			byName[n.Name] = n
		}
	}

	var nets []Network
	for name, n := range byName {
		if spec.Wants(name) {
			nets = append(nets, n)
		}
	}
	sort.Slice(nets, func(i, j int) bool { return filepath.Base(nets[i].File) < filepath.Base(nets[j].File) })

	var missing []string
	for _, name := range spec.Names {
		if _, ok := byName[name]; !ok && name != All {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		where := "no --local-config was given"
		if localConfig != "" {
			where = "looked in " + filepath.Join(localConfig, NetDir)
		}
		return nil, fmt.Errorf("network %s not found (%s; the built-in networks are %q and %q): add a configuration with that \"name\" to net.d or fix --net",
			strings.Join(missing, ", "), where, Default, DefaultRestricted)
	}
	return nets, nil
}

// loadDir reads every *.conf and *.conflist file of dir. Two files that
// define the same network are an error, where rkt 1.30.0 used the first
// and only warned, because the second file is then silently unused.
func loadDir(dir string) ([]Network, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read network configurations: %w", err)
	}
	seen := map[string]string{}
	var nets []Network
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".conf") || strings.HasSuffix(name, ".conflist")) {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read network configuration: %w", err)
		}
		n, err := parseNetwork(path, data)
		if err != nil {
			return nil, err
		}
		if first, dup := seen[n.Name]; dup {
			return nil, fmt.Errorf("network %q is defined twice, in %s and %s: rename or remove one", n.Name, first, path)
		}
		seen[n.Name] = path
		nets = append(nets, n)
	}
	return nets, nil
}

// parseNetwork parses a .conf or .conflist file's content.
func parseNetwork(path string, data []byte) (Network, error) {
	fix := "fix the file or remove it from net.d"
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(path, ".conflist") {
		l, err := libcni.ConfListFromBytes(data)
		if err != nil {
			return Network{}, fmt.Errorf("invalid network configuration list %s: %w; %s", path, err, fix)
		}
		list = l
	} else {
		conf, err := libcni.ConfFromBytes(data)
		if err != nil {
			return Network{}, fmt.Errorf("invalid network configuration %s: %w; %s", path, err, fix)
		}
		l, err := libcni.ConfListFromConf(conf)
		if err != nil {
			return Network{}, fmt.Errorf("invalid network configuration %s: %w; %s", path, err, fix)
		}
		list = l
	}
	if err := checkName(list.Name); err != nil {
		return Network{}, fmt.Errorf("invalid network configuration %s: %w; %s", path, err, fix)
	}
	if len(list.Plugins) == 0 {
		return Network{}, fmt.Errorf("invalid network configuration list %s: it has no plugins; %s", path, fix)
	}
	var first struct {
		IPMasq bool `json:"ipMasq"`
	}
	_ = json.Unmarshal(list.Plugins[0].Bytes, &first)
	confList, err := encodeList(list.Name, list.CNIVersion, list.Plugins)
	if err != nil {
		return Network{}, fmt.Errorf("network configuration %s: %w", path, err)
	}
	return Network{Name: list.Name, File: path, ConfList: confList, IPMasq: first.IPMasq}, nil
}

// checkName rejects names that are special --net values or that the flag
// syntax cannot express.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("\"name\" is missing")
	case name == None || name == Host || name == All:
		return fmt.Errorf("the network name %q is reserved by --net", name)
	case strings.ContainsAny(name, ",:;=/ \t\n"):
		return fmt.Errorf("invalid network name %q: it must not contain , : ; = / or spaces", name)
	}
	return nil
}

// encodeList writes a configuration list in JSON from its plugins' raw
// configurations.
func encodeList(name, version string, plugins []*libcni.PluginConfig) ([]byte, error) {
	raw := make([]json.RawMessage, len(plugins))
	for i, p := range plugins {
		raw[i] = p.Bytes
	}
	return json.Marshal(struct {
		CNIVersion string            `json:"cniVersion,omitempty"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}{version, name, raw})
}

// withPortmap returns the network's configuration list with the portmap
// plugin appended, unless the list already has it. It raises the list's
// CNI version to chainVersion when it is older, since chained plugins need
// a previous result.
func (n Network) withPortmap() ([]byte, error) {
	list, err := libcni.ConfListFromBytes(n.ConfList)
	if err != nil {
		return nil, err
	}
	for _, p := range list.Plugins {
		if p.Network.Type == "portmap" {
			return n.ConfList, nil
		}
	}
	pm, err := libcni.ConfFromBytes([]byte(`{"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}`))
	if err != nil {
		return nil, err
	}
	version := list.CNIVersion
	if version == "" || strings.HasPrefix(version, "0.1.") || strings.HasPrefix(version, "0.2.") {
		version = chainVersion
	}
	return encodeList(list.Name, version, append(list.Plugins, pm))
}
