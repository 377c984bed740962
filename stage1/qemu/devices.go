package qemu

import (
	"fmt"
	"net"
	"strings"

	govmm "github.com/intel/govmm/qemu"
)

// The devices below implement govmm's Device interface. govmm's own
// FSDevice has no read-only export and its CharDevice always makes QEMU the
// socket server, so these render those arguments themselves.

// Share is a 9p export of a host folder over virtio-mmio.
type Share struct {
	// Tag is the mount tag the guest mounts by (at most 31 bytes).
	Tag string
	// Path is the host folder.
	Path string
	// ReadOnly makes QEMU reject every write from the guest.
	ReadOnly bool
}

// MaxTagLength is the longest 9p mount tag QEMU accepts.
const MaxTagLength = 31

// Valid reports whether the share can be rendered.
func (s Share) Valid() bool {
	return s.Tag != "" && len(s.Tag) <= MaxTagLength && s.Path != "" && !strings.ContainsAny(s.Tag, ",=")
}

// QemuParams renders the -fsdev and -device arguments.
func (s Share) QemuParams(*govmm.Config) []string {
	id := "fs-" + s.Tag
	// A read-only export cannot change ownership, so it uses the "none"
	// model. Writable app shares use "passthrough" so that files the guest
	// creates keep the guest's uid and gid.
	// NOTE: with passthrough, root in the guest can create setuid files and
	// device nodes inside the shared folder on the host. No host code runs
	// or opens them, but "mapped-xattr" would keep them inert; it needs
	// user xattrs on the file system under the pod directory.
	path := escapeOption(s.Path)
	fsdev := fmt.Sprintf("local,id=%s,path=%s,security_model=passthrough,multidevs=remap", id, path)
	if s.ReadOnly {
		fsdev = fmt.Sprintf("local,id=%s,path=%s,security_model=none,readonly=on,multidevs=remap", id, path)
	}
	return []string{
		"-fsdev", fsdev,
		"-device", fmt.Sprintf("virtio-9p-device,fsdev=%s,mount_tag=%s", id, s.Tag),
	}
}

// SerialPort is a named virtio-serial port whose host end connects to a
// unix socket that the supervisor listens on. The guest finds it by name
// under /sys/class/virtio-ports.
type SerialPort struct {
	// ID is the QEMU id of the chardev and the device.
	ID string
	// Name is the port name the guest sees.
	Name string
	// Socket is the path of the host's listening unix socket.
	Socket string
}

// Valid reports whether the port can be rendered.
func (p SerialPort) Valid() bool {
	return p.ID != "" && p.Name != "" && p.Socket != ""
}

// QemuParams renders the -chardev and -device arguments. QEMU connects to
// the socket as a client when it starts, so nothing the guest writes before
// the supervisor reads is lost.
func (p SerialPort) QemuParams(*govmm.Config) []string {
	return []string{
		"-chardev", fmt.Sprintf("socket,id=%s,path=%s", p.ID, escapeOption(p.Socket)),
		"-device", fmt.Sprintf("virtserialport,bus=vser0.0,chardev=%s,id=port-%s,name=%s", p.ID, p.ID, p.Name),
	}
}

// Console is the guest's first serial port (ttyS0), the kernel console,
// connected to a unix socket that the supervisor listens on. A virtio
// console is no substitute: its port appears after the kernel has opened
// the initial console for init, so init would start without stdio.
type Console struct {
	Socket string
}

// Valid reports whether the console can be rendered.
func (c Console) Valid() bool {
	return c.Socket != ""
}

// QemuParams renders the -chardev and -serial arguments.
func (c Console) QemuParams(*govmm.Config) []string {
	return []string{
		"-chardev", fmt.Sprintf("socket,id=console,path=%s", escapeOption(c.Socket)),
		"-serial", "chardev:console",
	}
}

// QMPSocket is QEMU's QMP monitor on a unix socket that QEMU creates and
// listens on. The supervisor uses it only to press the guest's ACPI power
// button when the guest agent does not take a stop request.
type QMPSocket struct {
	Path string
}

// Valid reports whether the monitor can be rendered.
func (q QMPSocket) Valid() bool {
	return q.Path != ""
}

// QemuParams renders the -chardev and -mon arguments. With wait=off QEMU
// starts without waiting for a client.
func (q QMPSocket) QemuParams(*govmm.Config) []string {
	return []string{
		"-chardev", fmt.Sprintf("socket,id=qmp,path=%s,server=on,wait=off", escapeOption(q.Path)),
		"-mon", "chardev=qmp,mode=control",
	}
}

// escapeOption escapes a value inside a QEMU option list, where a comma
// separates options and two commas stand for one.
func escapeOption(value string) string {
	return strings.ReplaceAll(value, ",", ",,")
}

// TapNIC is a virtio-net device whose host end is a tap device that the
// supervisor opened and passes to QEMU as descriptor FD.
type TapNIC struct {
	ID string
	// FD is the tap's descriptor number in QEMU's process.
	FD  int
	MAC string
}

// Valid reports whether the NIC can be rendered.
func (n TapNIC) Valid() bool {
	return n.ID != "" && n.FD > 2 && validMAC(n.MAC)
}

// QemuParams renders the -netdev and -device arguments.
func (n TapNIC) QemuParams(*govmm.Config) []string {
	return []string{
		"-netdev", fmt.Sprintf("tap,id=%s,fd=%d", n.ID, n.FD),
		"-device", fmt.Sprintf("virtio-net-device,netdev=%s,mac=%s", n.ID, n.MAC),
	}
}

// HostForward forwards a port of the host's addresses to the guest through
// QEMU's user-mode network stack.
type HostForward struct {
	// Protocol is tcp or udp.
	Protocol string
	// HostIP is empty for every address of the host.
	HostIP    string
	HostPort  int
	GuestPort int
}

// UserNIC is a virtio-net device on QEMU's user-mode network stack (slirp),
// whose traffic leaves through QEMU's own sockets on the host.
type UserNIC struct {
	ID       string
	MAC      string
	Forwards []HostForward
}

// Valid reports whether the NIC can be rendered.
func (n UserNIC) Valid() bool {
	if n.ID == "" || !validMAC(n.MAC) {
		return false
	}
	for _, f := range n.Forwards {
		if (f.Protocol != "tcp" && f.Protocol != "udp") || f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 || strings.ContainsAny(f.HostIP, ",:-") {
			return false
		}
	}
	return true
}

// QemuParams renders the -netdev and -device arguments.
func (n UserNIC) QemuParams(*govmm.Config) []string {
	netdev := "user,id=" + n.ID
	for _, f := range n.Forwards {
		netdev += fmt.Sprintf(",hostfwd=%s:%s:%d-:%d", f.Protocol, f.HostIP, f.HostPort, f.GuestPort)
	}
	return []string{
		"-netdev", netdev,
		"-device", fmt.Sprintf("virtio-net-device,netdev=%s,mac=%s", n.ID, n.MAC),
	}
}

func validMAC(mac string) bool {
	hw, err := net.ParseMAC(mac)
	return err == nil && len(hw) == 6
}
