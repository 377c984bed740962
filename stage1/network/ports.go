package network

import (
	"fmt"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// ForwardedPorts resolves the pod manifest's exposed ports (rkt's --port
// NAME:HOSTPORT) against the ports that the apps declare. As in rkt, an
// exposed port without a podPort takes the app port of the same name, and
// a port with a count forwards that many consecutive ports.
func ForwardedPorts(pm *schema.PodManifest) ([]PortMapping, error) {
	var mappings []PortMapping
	for _, ep := range pm.Ports {
		podPort := ep.PodPort
		if podPort == nil {
			var err error
			if podPort, err = appPort(pm, ep.Name); err != nil {
				return nil, err
			}
		}
		protocol := strings.ToLower(podPort.Protocol)
		if protocol != "tcp" && protocol != "udp" {
			return nil, fmt.Errorf("port %q: invalid protocol %q: use tcp or udp in the app's port", ep.Name, podPort.Protocol)
		}
		count := podPort.Count
		if count == 0 {
			count = 1
		}
		if ep.HostPort == 0 || ep.HostPort+count-1 > 65535 {
			return nil, fmt.Errorf("port %q: invalid host port %d (count %d): use --port=%s:PORT with a port from 1 to 65535", ep.Name, ep.HostPort, count, ep.Name)
		}
		if podPort.Port == 0 || podPort.Port+count-1 > 65535 {
			return nil, fmt.Errorf("port %q: invalid app port %d (count %d)", ep.Name, podPort.Port, count)
		}
		hostIP := ""
		if ep.HostIP != nil && !ep.HostIP.IsUnspecified() {
			hostIP = ep.HostIP.String()
		}
		for i := uint(0); i < count; i++ {
			mappings = append(mappings, PortMapping{
				HostPort:      int(ep.HostPort + i),
				ContainerPort: int(podPort.Port + i),
				Protocol:      protocol,
				HostIP:        hostIP,
			})
		}
	}
	return mappings, nil
}

// appPort finds the app port called name. A name that two apps declare is
// ambiguous and rejected.
func appPort(pm *schema.PodManifest, name types.ACName) (*types.Port, error) {
	var found *types.Port
	var owner types.ACName
	for _, ra := range pm.Apps {
		if ra.App == nil {
			continue
		}
		for i := range ra.App.Ports {
			if ra.App.Ports[i].Name != name {
				continue
			}
			if found != nil {
				return nil, fmt.Errorf("port %q is declared by both app %s and app %s: forward it with an explicit podPort", name, owner, ra.Name)
			}
			found, owner = &ra.App.Ports[i], ra.Name
		}
	}
	if found == nil {
		return nil, fmt.Errorf("port %q is forwarded (--port) but no app of the pod declares a port of that name: use a port name from an app's image manifest", name)
	}
	return found, nil
}

// User-mode networking as QEMU's slirp sets it up: the guest's address,
// the gateway, which reaches the host's own addresses and loopback, and
// the MAC address of QEMU's first NIC.
const (
	UserModeAddress = "10.0.2.15/24"
	UserModeGateway = "10.0.2.2"
	UserModeMAC     = "52:54:00:12:34:56"
)

// UserModeInterface is the guest's NIC for --net=host.
func UserModeInterface() guestconfig.Interface {
	return guestconfig.Interface{
		Name:      "eth0",
		MAC:       UserModeMAC,
		Addresses: []guestconfig.Address{{CIDR: UserModeAddress}},
		Routes:    []guestconfig.Route{{Gateway: UserModeGateway}},
	}
}
