package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// DNSMode is rkt's --dns-conf-mode: where each app's /etc/resolv.conf and
// /etc/hosts come from.
type DNSMode struct {
	// Resolv is "default" (the image's, or the CNI result's DNS), "host"
	// (the host's file), "stage0" (rkt-resolv.conf, which rkt writes for
	// --dns) or "none" (the image's).
	Resolv string
	// Hosts is "default" (the image's, or a generated one when it has
	// none), "host" (the host's file) or "stage0" (rkt-hosts, which rkt
	// writes for --hosts-entry, plus the pod's hostname).
	Hosts string
}

// ParseDNSConfMode parses "resolv=X,hosts=Y"; either part may be missing,
// and an empty value gives the defaults.
func ParseDNSConfMode(s string) (DNSMode, error) {
	mode := DNSMode{Resolv: "default", Hosts: "default"}
	if s == "" {
		return mode, nil
	}
	allowed := map[string][]string{
		"resolv": {"host", "stage0", "none", "default"},
		"hosts":  {"host", "stage0", "default"},
	}
	for _, pair := range strings.Split(s, ",") {
		key, value, ok := strings.Cut(pair, "=")
		values, known := allowed[key]
		if !ok || !known {
			return mode, fmt.Errorf("invalid --dns-conf-mode %q: use resolv=MODE,hosts=MODE", s)
		}
		valid := false
		for _, v := range values {
			valid = valid || v == value
		}
		if !valid {
			return mode, fmt.Errorf("invalid --dns-conf-mode %s=%q: use one of %s", key, value, strings.Join(values, ", "))
		}
		if key == "resolv" {
			mode.Resolv = value
		} else {
			mode.Hosts = value
		}
	}
	return mode, nil
}

// Host files that the host and stage0 modes copy.
var (
	hostResolvConf = "/etc/resolv.conf"
	hostHosts      = "/etc/hosts"
)

// Names of the DNS files in the config share.
const (
	resolvConfFile = "etc/resolv.conf"
	hostsFile      = "etc/hosts"
)

// dnsFiles returns the files the config share carries for the DNS mode,
// by their path in the share. rkt writes rkt-resolv.conf and rkt-hosts
// into the stage1 rootfs, which the guest cannot reach.
func dnsFiles(podDir string, mode DNSMode, hostname string) (map[string][]byte, error) {
	files := map[string][]byte{}
	stage0 := func(name string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(podDir, Stage1Rootfs, "etc", name))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return data, err
	}
	var err error
	switch mode.Resolv {
	case "host":
		files[resolvConfFile], err = os.ReadFile(hostResolvConf)
	case "stage0":
		files[resolvConfFile], err = stage0("rkt-resolv.conf")
	}
	if err != nil {
		return nil, fmt.Errorf("resolv.conf for --dns-conf-mode resolv=%s: %w", mode.Resolv, err)
	}
	switch mode.Hosts {
	case "host":
		files[hostsFile], err = os.ReadFile(hostHosts)
	case "stage0":
		var data []byte
		if data, err = stage0("rkt-hosts"); data != nil {
			if len(data) > 0 && data[len(data)-1] != '\n' {
				data = append(data, '\n')
			}
			files[hostsFile] = append(data, []byte("127.0.0.1\t"+hostname+"\n")...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("hosts for --dns-conf-mode hosts=%s: %w", mode.Hosts, err)
	}
	for name, data := range files {
		if data == nil {
			delete(files, name)
		}
	}
	return files, nil
}

// dnsMounts returns the mounts of the DNS files over the app's own.
func dnsMounts(files map[string][]byte) []guestconfig.Mount {
	var mounts []guestconfig.Mount
	for _, name := range []string{resolvConfFile, hostsFile} {
		if _, ok := files[name]; ok {
			mounts = append(mounts, guestconfig.Mount{View: name, Target: "/" + name, File: true, Config: true, ReadOnly: true})
		}
	}
	return mounts
}

// UseResolvConf gives every app data as its /etc/resolv.conf, as the DNS
// configuration a network plugin returned. It must run before Prepare.
func (v *Volumes) UseResolvConf(cfg *guestconfig.Pod, data []byte) {
	if _, ok := v.plan.configFiles[resolvConfFile]; ok {
		return
	}
	v.plan.configFiles[resolvConfFile] = data
	for i := range cfg.Apps {
		mounts := dnsMounts(map[string][]byte{resolvConfFile: data})
		cfg.Apps[i].Mounts = append(mounts, cfg.Apps[i].Mounts...)
	}
}

// HostsFromConfig reports whether the apps get /etc/hosts from the config
// share (--dns-conf-mode hosts=host, or hosts=stage0 with rkt's file).
// Otherwise an app without /etc/hosts gets a generated one.
func (v *Volumes) HostsFromConfig() bool {
	_, ok := v.plan.configFiles[hostsFile]
	return ok
}
