package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/appc/spec/schema"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	govmm "github.com/intel/govmm/qemu"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/stage1/network"
	"github.com/stage1-vm/stage1-vm/stage1/pod"
	"github.com/stage1-vm/stage1-vm/stage1/qemu"
)

// podNetworks are the QEMU devices and descriptors of a pod's networks.
type podNetworks struct {
	devices []govmm.Device
	files   []*os.File
	// dns is the DNS configuration the plugins returned, if any.
	dns cnitypes.DNS
	// hostIP is the host's address on the pod's network, on which apps
	// reach the metadata service. It is nil without a network.
	hostIP net.IP
}

// firstTapFD is the descriptor number of QEMU's first extra file.
const firstTapFD = 3

// attachNetworks checks the --net and port settings, attaches the pod's
// networks and sets the guest's interfaces in cfg. It registers the
// teardown in undo, to run after QEMU has exited.
//
// QEMU does not run in the pod's network namespace: the run entrypoint
// opens each tap inside the namespace and passes QEMU the descriptor, which
// keeps working from any namespace. QEMU then needs no namespace switch,
// and with --net=host its user-mode stack uses the host's namespace.
func attachNetworks(podDir string, manifest *schema.PodManifest, cfg *guestconfig.Pod, flags *Flags, log *slog.Logger, undo *cleanups) (podNetworks, error) {
	var result podNetworks
	spec, err := network.ParseSpec(flags.Net)
	if err != nil {
		return result, err
	}
	ports, err := network.ForwardedPorts(manifest)
	if err != nil {
		return result, err
	}

	switch spec.Mode {
	case network.ModeNone:
		if len(ports) > 0 {
			return result, errors.New("the pod forwards ports (--port) but runs with --net=none: use --net=default or another network")
		}
		return result, nil
	case network.ModeHost:
		if err := pod.CheckDeviceCount(volumeShares(cfg), 1); err != nil {
			return result, err
		}
		nic := qemu.UserNIC{ID: "net0", MAC: network.UserModeMAC}
		for _, p := range ports {
			nic.Forwards = append(nic.Forwards, qemu.HostForward{Protocol: p.Protocol, HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.ContainerPort})
		}
		cfg.Interfaces = []guestconfig.Interface{network.UserModeInterface()}
		result.devices = []govmm.Device{nic}
		result.hostIP = net.ParseIP(network.UserModeGateway)
		return result, nil
	}

	nets, err := network.LoadNetworks(spec, flags.LocalConfig)
	if err != nil {
		return result, err
	}
	if err := pod.CheckDeviceCount(volumeShares(cfg), len(nets)); err != nil {
		return result, err
	}
	np := network.Pod{Dir: podDir, UUID: cfg.UUID, LocalConfig: flags.LocalConfig, Log: log}
	if err := np.CheckPlugins(nets, ports); err != nil {
		return result, err
	}

	start := time.Now()
	// Down is registered first: Up records its steps before taking them,
	// so Down also undoes an Up that crashed halfway.
	var att *network.Attachment
	undo.add(func() error {
		if att != nil {
			att.Close()
		}
		return np.Down(context.Background())
	})
	att, err = np.Up(context.Background(), nets, spec.Args, ports)
	if err != nil {
		return result, fmt.Errorf("attach the networks of pod %s: %w", cfg.UUID, err)
	}
	log.Debug("networks attached", "count", len(nets), "after", time.Since(start))

	cfg.Interfaces = att.Interfaces
	for i, iface := range att.Interfaces {
		result.devices = append(result.devices, qemu.TapNIC{ID: fmt.Sprintf("net%d", i), FD: firstTapFD + i, MAC: iface.MAC})
	}
	result.files = att.Taps
	result.dns, result.hostIP = att.DNS, att.HostIP
	return result, nil
}

// volumeShares is the number of volume shares the pod's VM has: one when
// an app mounts a volume.
func volumeShares(cfg *guestconfig.Pod) int {
	if cfg.Volumes {
		return 1
	}
	return 0
}

// MetadataServicePort is the port of rkt's metadata service for apps.
const MetadataServicePort = 18112

var validMDSToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// metadataURL returns AC_METADATA_URL for the pod's apps: rkt's metadata
// service on the host side of the pod's network, with the pod's token.
func metadataURL(token string, nets podNetworks) (string, error) {
	if !validMDSToken.MatchString(token) {
		return "", fmt.Errorf("invalid --mds-token %q: rkt gives letters, digits, - and _", token)
	}
	if nets.hostIP == nil {
		return "", errors.New("--mds-token needs a network whose plugins return a gateway, on which the host serves the metadata: use --net=default or --net=host")
	}
	return fmt.Sprintf("http://%s/%s", net.JoinHostPort(nets.hostIP.String(), fmt.Sprint(MetadataServicePort)), token), nil
}

// resolvConf renders a DNS configuration in resolv.conf syntax.
func resolvConf(dns cnitypes.DNS) []byte {
	var b strings.Builder
	for _, ns := range dns.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if dns.Domain != "" {
		fmt.Fprintf(&b, "domain %s\n", dns.Domain)
	}
	if len(dns.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Search, " "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String())
}
