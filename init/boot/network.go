package boot

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// configureInterfaces gives each NIC its name, MTU, addresses and routes.
// NICs are matched by MAC address, since the order in which the kernel
// probes virtio-mmio devices is not the order of QEMU's arguments.
func configureInterfaces(ifaces []guestconfig.Interface) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list network interfaces: %w", err)
	}
	byMAC := map[string]netlink.Link{}
	for _, l := range links {
		byMAC[strings.ToLower(l.Attrs().HardwareAddr.String())] = l
	}
	for _, iface := range ifaces {
		link, ok := byMAC[strings.ToLower(iface.MAC)]
		if !ok {
			return fmt.Errorf("interface %s: no NIC has MAC address %s", iface.Name, iface.MAC)
		}
		if err := configureInterface(link, iface); err != nil {
			return fmt.Errorf("interface %s (%s): %w", iface.Name, iface.MAC, err)
		}
	}
	return nil
}

func configureInterface(link netlink.Link, iface guestconfig.Interface) error {
	// Renaming a NIC needs it down, which it still is.
	if link.Attrs().Name != iface.Name {
		if err := netlink.LinkSetName(link, iface.Name); err != nil {
			return fmt.Errorf("rename %s: %w", link.Attrs().Name, err)
		}
	}
	if iface.MTU > 0 {
		if err := netlink.LinkSetMTU(link, iface.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", iface.MTU, err)
		}
	}
	for _, a := range iface.Addresses {
		addr, err := netlink.ParseAddr(a.CIDR)
		if err != nil {
			return fmt.Errorf("invalid address %q: %w", a.CIDR, err)
		}
		if a.NoPrefixRoute {
			addr.Flags |= unix.IFA_F_NOPREFIXROUTE
		}
		if addr.IP.To4() == nil {
			// The host already checked the address for duplicates.
			addr.Flags |= unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s: %w", a.CIDR, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up: %w", err)
	}
	// Routes to hosts on the link go first, because a route through a
	// gateway needs a route to the gateway.
	var ordered []guestconfig.Route
	for _, r := range iface.Routes {
		if r.Gateway == "" {
			ordered = append(ordered, r)
		}
	}
	for _, r := range iface.Routes {
		if r.Gateway != "" {
			ordered = append(ordered, r)
		}
	}
	for _, r := range ordered {
		route, err := parseRoute(link, r)
		if err != nil {
			return err
		}
		// With two networks, a second default route fails with EEXIST,
		// and the first network's stays, as with rkt's default stage1.
		if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add route %+v: %w", r, err)
		}
	}
	return nil
}

func parseRoute(link netlink.Link, r guestconfig.Route) (*netlink.Route, error) {
	route := &netlink.Route{LinkIndex: link.Attrs().Index}
	if r.Dst != "" {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, fmt.Errorf("invalid route destination %q: %w", r.Dst, err)
		}
		route.Dst = dst
	}
	if r.Gateway != "" {
		route.Gw = net.ParseIP(r.Gateway)
		if route.Gw == nil {
			return nil, fmt.Errorf("invalid route gateway %q", r.Gateway)
		}
	} else {
		route.Scope = netlink.SCOPE_LINK
	}
	if r.Source != "" {
		route.Src = net.ParseIP(r.Source)
		if route.Src == nil {
			return nil, fmt.Errorf("invalid route source %q", r.Source)
		}
	}
	return route, nil
}
