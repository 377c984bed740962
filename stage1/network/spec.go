// Package network gives a pod's VM the networks that rkt's --net flag
// requests. It creates the pod's network namespace, runs the CNI plugins in it
// through libcni, mirrors each interface the plugins configure to a tap
// device that QEMU uses, and tears all of it down again.
package network

import (
	"fmt"
	"net"
	"strings"
)

// Special network names of rkt's --net flag.
const (
	// None gives the pod loopback only.
	None = "none"
	// Host shares the host's network in rkt's default stage1. A VM gets
	// QEMU's user-mode networking instead.
	Host = "host"
	// All loads every network defined in net.d and the built-in ones.
	All = "all"
	// Default is the network rkt uses when --net is not given.
	Default = "default"
	// DefaultRestricted is the built-in network without a default route
	// and without masquerading.
	DefaultRestricted = "default-restricted"
)

// Mode is how a pod is networked.
type Mode int

const (
	// ModeContained runs CNI networks in a network namespace of the pod.
	ModeContained Mode = iota
	// ModeNone gives the guest loopback only.
	ModeNone
	// ModeHost gives the guest QEMU's user-mode networking.
	ModeHost
)

// Spec is a parsed --net value.
type Spec struct {
	Mode Mode
	// All is set by --net=all.
	All bool
	// Args maps each requested network name to its CNI_ARGS, in the order
	// of Names.
	Args map[string][][2]string
	// Names are the requested networks in the order of the flag. Networks
	// are attached in the order of their file names, as rkt does.
	Names []string
}

// ParseSpec parses a --net value as rkt 1.30.0 accepts it: a comma-separated
// list of network names, each optionally followed by ":" and CNI_ARGS as
// KEY=VALUE pairs separated by ";". An empty value means "default".
func ParseSpec(value string) (Spec, error) {
	s := Spec{Args: map[string][][2]string{}}
	if value == "" {
		value = Default
	}
	for _, item := range strings.Split(value, ",") {
		name, args, hasArgs := strings.Cut(item, ":")
		if name == "" {
			return s, fmt.Errorf("invalid --net=%s: a network name is empty; use --net=name1,name2:KEY=VALUE", value)
		}
		if strings.Contains(args, ":") {
			return s, fmt.Errorf("invalid --net=%s: network %q has more than one \":\"; separate CNI arguments with \";\"", value, name)
		}
		if _, dup := s.Args[name]; dup {
			return s, fmt.Errorf("invalid --net=%s: network %q is given twice", value, name)
		}
		if hasArgs && (name == All || name == Host || name == None) {
			return s, fmt.Errorf("invalid --net=%s: the special network %q takes no arguments", value, name)
		}
		pairs, err := parseCNIArgs(args)
		if err != nil {
			return s, fmt.Errorf("invalid --net=%s: network %q: %w", value, name, err)
		}
		s.Args[name] = pairs
		s.Names = append(s.Names, name)
	}
	for _, special := range []string{None, Host} {
		if _, ok := s.Args[special]; ok && len(s.Names) > 1 {
			return s, fmt.Errorf("invalid --net=%s: %q cannot be combined with other networks", value, special)
		}
	}
	switch s.Names[0] {
	case None:
		s.Mode = ModeNone
	case Host:
		s.Mode = ModeHost
	}
	_, s.All = s.Args[All]
	return s, nil
}

// parseCNIArgs splits "K1=V1;K2=V2" into pairs. IP values must be IP
// addresses, since host-local and static read them as such, and a typo
// should fail here with the value rather than inside a plugin.
func parseCNIArgs(args string) ([][2]string, error) {
	if args == "" {
		return nil, nil
	}
	var pairs [][2]string
	for _, kv := range strings.Split(args, ";") {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("invalid CNI argument %q: expected KEY=VALUE", kv)
		}
		if strings.ContainsAny(kv, "\x00\n") {
			return nil, fmt.Errorf("invalid CNI argument %q: it contains a NUL byte or newline", kv)
		}
		if key == "IP" {
			for _, ip := range strings.Split(val, ",") {
				if net.ParseIP(ip) == nil {
					return nil, fmt.Errorf("invalid CNI argument IP=%s: %q is not an IP address", val, ip)
				}
			}
		}
		pairs = append(pairs, [2]string{key, val})
	}
	return pairs, nil
}

// Wants reports whether a network of this name is requested.
func (s Spec) Wants(name string) bool {
	if s.Mode != ModeContained {
		return false
	}
	_, ok := s.Args[name]
	return ok || s.All
}
