package network

import (
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// attachTap creates a tap device next to the interface ifName that the
// plugins configured in the namespace at nsPath, and mirrors the two with
// tc: whatever arrives on one leaves through the other. The guest NIC then
// stands in for ifName. It returns the tap's file, which QEMU receives as
// an open descriptor, and the interface's configuration for the guest.
//
// The tap is not persistent: it disappears when the last descriptor of it
// closes, and at the latest with the namespace.
func attachTap(nsPath, ifName, tapName string) (*os.File, guestconfig.Interface, error) {
	var tap *os.File
	var iface guestconfig.Interface
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("find interface %s that the plugins created: %w", ifName, err)
		}
		// The tun driver creates the device in the namespace of the
		// thread that opens /dev/net/tun, which is nsPath's here.
		tap, err = openTap(tapName)
		if err != nil {
			return err
		}
		tapLink, err := netlink.LinkByName(tapName)
		if err != nil {
			return fmt.Errorf("find tap %s: %w", tapName, err)
		}
		mtu := link.Attrs().MTU
		if err := netlink.LinkSetMTU(tapLink, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, tapName, err)
		}
		if err := netlink.LinkSetUp(tapLink); err != nil {
			return fmt.Errorf("bring up %s: %w", tapName, err)
		}
		if err := redirect(link, tapLink); err != nil {
			return err
		}
		if err := redirect(tapLink, link); err != nil {
			return err
		}
		iface, err = describe(link)
		return err
	})
	if err != nil {
		if tap != nil {
			tap.Close()
		}
		return nil, guestconfig.Interface{}, fmt.Errorf("attach a tap to %s in %s: %w", ifName, nsPath, err)
	}
	iface.Name = ifName
	return tap, iface, nil
}

// openTap creates a tap device without packet information headers.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tap %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// redirect sends every frame that arrives on from out through to, with an
// ingress qdisc on from and a u32 filter that matches all frames.
func redirect(from, to netlink.Link) error {
	qdisc := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: from.Attrs().Index,
		Parent:    netlink.HANDLE_INGRESS,
		Handle:    netlink.MakeHandle(0xffff, 0),
	}}
	if err := netlink.QdiscAdd(qdisc); err != nil {
		return fmt.Errorf("add ingress qdisc to %s: %w", from.Attrs().Name, err)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		// One key with a zero mask matches every frame.
		Sel: &netlink.TcU32Sel{Keys: []netlink.TcU32Key{{Mask: 0, Val: 0}}, Flags: netlink.TC_U32_TERMINAL},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to.Attrs().Index,
		}},
	}
	if err := netlink.FilterAdd(filter); err != nil {
		return fmt.Errorf("add redirect filter from %s to %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

// describe reads the MAC address, MTU, addresses and routes that the
// plugins gave link, so that the guest can set the same on its NIC.
// Reading the kernel's state rather than the CNI result covers what a
// plugin does beyond its result, such as ptp's removal of the subnet route
// or tuning's MTU.
func describe(link netlink.Link) (guestconfig.Interface, error) {
	attrs := link.Attrs()
	iface := guestconfig.Interface{MAC: attrs.HardwareAddr.String(), MTU: attrs.MTU}

	routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return iface, fmt.Errorf("list routes of %s: %w", attrs.Name, err)
	}
	kernelRoutes := map[string]bool{}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			if r.Dst != nil {
				kernelRoutes[r.Dst.String()] = true
			}
			continue
		}
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		route := guestconfig.Route{}
		if r.Dst != nil {
			route.Dst = r.Dst.String()
		}
		if r.Gw != nil {
			route.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			route.Source = r.Src.String()
		}
		iface.Routes = append(iface.Routes, route)
	}

	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return iface, fmt.Errorf("list addresses of %s: %w", attrs.Name, err)
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		prefix := &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}
		iface.Addresses = append(iface.Addresses, guestconfig.Address{
			CIDR:          a.IPNet.String(),
			NoPrefixRoute: !kernelRoutes[prefix.String()],
		})
	}
	return iface, nil
}
