package network

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
)

func TestParseSpecValid(t *testing.T) {
	cases := []struct {
		value string
		mode  Mode
		names []string
		args  map[string][][2]string
	}{
		{"", ModeContained, []string{"default"}, map[string][][2]string{"default": nil}},
		{"none", ModeNone, []string{"none"}, map[string][][2]string{"none": nil}},
		{"host", ModeHost, []string{"host"}, map[string][][2]string{"host": nil}},
		{"a,b", ModeContained, []string{"a", "b"}, map[string][][2]string{"a": nil, "b": nil}},
		{"a:IP=10.1.1.5;K=v,b", ModeContained, []string{"a", "b"}, map[string][][2]string{"a": {{"IP", "10.1.1.5"}, {"K", "v"}}, "b": nil}},
	}
	for _, c := range cases {
		s, err := ParseSpec(c.value)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", c.value, err)
			continue
		}
		if s.Mode != c.mode {
			t.Errorf("ParseSpec(%q).Mode = %v, want %v", c.value, s.Mode, c.mode)
		}
		if !reflect.DeepEqual(s.Names, c.names) {
			t.Errorf("ParseSpec(%q).Names = %q, want %q", c.value, s.Names, c.names)
		}
		if !reflect.DeepEqual(s.Args, c.args) {
			t.Errorf("ParseSpec(%q).Args = %q, want %q", c.value, s.Args, c.args)
		}
	}
}

func TestParseSpecInvalid(t *testing.T) {
	cases := map[string]string{
		"a,,b":            "empty",
		"a,a":             "twice",
		"a:IP=10.1.1.x":   "10.1.1.x",
		"a:IP":            "KEY=VALUE",
		"a:K=v:w":         "more than one",
		"all:IP=10.1.1.5": "no arguments",
		"host,default":    "cannot be combined",
		"none,default":    "cannot be combined",
	}
	for value, want := range cases {
		_, err := ParseSpec(value)
		if err == nil {
			t.Errorf("ParseSpec(%q) succeeded, want an error mentioning %q", value, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSpec(%q) = %v, want it to mention %q", value, err, want)
		}
	}
}

func TestWantsAll(t *testing.T) {
	s, err := ParseSpec("all")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Wants("anything") {
		t.Error("--net=all does not want every network")
	}
}

func writeConf(t *testing.T, dir, file, conf string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, NetDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, NetDir, file), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func names(nets []Network) []string {
	var out []string
	for _, n := range nets {
		out = append(out, n.Name)
	}
	return out
}

func TestLoadNetworksBuiltins(t *testing.T) {
	spec, _ := ParseSpec("default")
	nets, err := LoadNetworks(spec, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(nets); !reflect.DeepEqual(got, []string{"default"}) {
		t.Fatalf("networks = %q, want default", got)
	}
	if !nets[0].IPMasq {
		t.Error("the default network does not masquerade")
	}
	if !strings.Contains(string(nets[0].ConfList), "172.16.28.0/24") {
		t.Errorf("default network %s lacks rkt's subnet", nets[0].ConfList)
	}
}

func TestLoadNetworksOrderAndOverride(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "20-b.conf", `{"cniVersion": "0.4.0", "name": "b", "type": "bridge"}`)
	writeConf(t, dir, "10-a.conflist", `{"cniVersion": "0.4.0", "name": "a", "plugins": [{"type": "ptp"}, {"type": "tuning"}]}`)
	writeConf(t, dir, "30-default.conf", `{"cniVersion": "0.4.0", "name": "default", "type": "macvlan"}`)
	writeConf(t, dir, "README", `not a configuration`)
	spec, _ := ParseSpec("default,b,a")
	nets, err := LoadNetworks(spec, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(nets); !reflect.DeepEqual(got, []string{"a", "b", "default"}) {
		t.Errorf("networks = %q, want them in file name order a, b, default", got)
	}
	if !strings.Contains(string(nets[2].ConfList), "macvlan") {
		t.Errorf("default = %s, want the net.d file to replace the built-in network", nets[2].ConfList)
	}
}

func TestLoadNetworksErrors(t *testing.T) {
	cases := []struct {
		file, conf, net, want string
	}{
		{"10-x.conf", `{"name": "x", "type": `, "x", "10-x.conf"},
		{"10-x.conf", `{"cniVersion": "0.4.0", "name": "x"}`, "x", "missing 'type'"},
		{"10-x.conf", `{"cniVersion": "0.4.0", "name": "x", "type": "ptp"}`, "nosuchnet", "nosuchnet"},
		{"10-x.conf", `{"cniVersion": "0.4.0", "name": "host", "type": "ptp"}`, "default", "reserved"},
		{"10-x.conflist", `{"cniVersion": "0.4.0", "name": "x", "plugins": []}`, "x", "10-x.conflist"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		writeConf(t, dir, c.file, c.conf)
		spec, _ := ParseSpec(c.net)
		_, err := LoadNetworks(spec, dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadNetworks(%s, --net=%s) = %v, want an error mentioning %q", c.conf, c.net, err, c.want)
		}
	}
}

func TestLoadNetworksDuplicateName(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "10-x.conf", `{"cniVersion": "0.4.0", "name": "x", "type": "ptp"}`)
	writeConf(t, dir, "20-x.conf", `{"cniVersion": "0.4.0", "name": "x", "type": "bridge"}`)
	spec, _ := ParseSpec("x")
	if _, err := LoadNetworks(spec, dir); err == nil || !strings.Contains(err.Error(), "defined twice") {
		t.Errorf("LoadNetworks = %v, want an error about the name defined twice", err)
	}
}

func TestWithPortmapRaisesOldVersion(t *testing.T) {
	n, err := parseNetwork("10-old.conf", []byte(`{"cniVersion": "0.1.0", "name": "old", "type": "ptp"}`))
	if err != nil {
		t.Fatal(err)
	}
	list, err := n.withPortmap()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"cniVersion":"` + chainVersion + `"`, `"type":"portmap"`, `"type":"ptp"`} {
		if !strings.Contains(string(list), want) {
			t.Errorf("list %s lacks %s", list, want)
		}
	}
	again, err := Network{Name: "old", ConfList: list}.withPortmap()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(again), "portmap") != 1 {
		t.Errorf("portmap added twice: %s", again)
	}
}

func TestWithIgnoreUnknown(t *testing.T) {
	if got := withIgnoreUnknown(nil); got != nil {
		t.Errorf("withIgnoreUnknown(nil) = %q, want nil", got)
	}
	got := withIgnoreUnknown([][2]string{{"IP", "10.1.1.5"}})
	want := [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.1.1.5"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withIgnoreUnknown = %q, want %q", got, want)
	}
}

func TestForwardTarget(t *testing.T) {
	nets := []Network{{Name: "a"}, {Name: "b", IPMasq: true}, {Name: "c", IPMasq: true}}
	if got := forwardTarget(nets); got != 1 {
		t.Errorf("forwardTarget = %d, want the first masquerading network, 1", got)
	}
	if got := forwardTarget(nets[:1]); got != 0 {
		t.Errorf("forwardTarget without masquerading = %d, want the last network, 0", got)
	}
}

func podWithPorts(t *testing.T, appPorts []types.Port, exposed []types.ExposedPort) *schema.PodManifest {
	t.Helper()
	pm := schema.BlankPodManifest()
	pm.Apps = schema.AppList{{Name: *types.MustACName("web"), App: &types.App{Exec: []string{"/bin/web"}, Ports: appPorts}}}
	pm.Ports = exposed
	return pm
}

func TestForwardedPorts(t *testing.T) {
	pm := podWithPorts(t,
		[]types.Port{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "udp", Port: 53, Count: 2}},
		[]types.ExposedPort{{Name: "http", HostPort: 8080}, {Name: "dns", HostPort: 5353}})
	got, err := ForwardedPorts(pm)
	if err != nil {
		t.Fatal(err)
	}
	want := []PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 5353, ContainerPort: 53, Protocol: "udp"},
		{HostPort: 5354, ContainerPort: 54, Protocol: "udp"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ForwardedPorts = %+v, want %+v", got, want)
	}
}

func TestForwardedPortsErrors(t *testing.T) {
	cases := []struct {
		app  []types.Port
		exp  []types.ExposedPort
		want string
	}{
		{nil, []types.ExposedPort{{Name: "http", HostPort: 8080}}, "no app"},
		{[]types.Port{{Name: "http", Protocol: "sctp", Port: 80}}, []types.ExposedPort{{Name: "http", HostPort: 8080}}, "sctp"},
		{[]types.Port{{Name: "http", Protocol: "tcp", Port: 80}}, []types.ExposedPort{{Name: "http", HostPort: 0}}, "invalid host port"},
		{[]types.Port{{Name: "http", Protocol: "tcp", Port: 80, Count: 2}}, []types.ExposedPort{{Name: "http", HostPort: 65535}}, "invalid host port"},
	}
	for _, c := range cases {
		_, err := ForwardedPorts(podWithPorts(t, c.app, c.exp))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ForwardedPorts(%+v, %+v) = %v, want an error mentioning %q", c.app, c.exp, err, c.want)
		}
	}
}
