package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/appc/spec/schema"
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
		if err := pod.CheckDeviceCount(len(cfg.Apps), volumeShares(cfg), 1); err != nil {
			return result, err
		}
		nic := qemu.UserNIC{ID: "net0", MAC: network.UserModeMAC}
		for _, p := range ports {
			nic.Forwards = append(nic.Forwards, qemu.HostForward{Protocol: p.Protocol, HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.ContainerPort})
		}
		cfg.Interfaces = []guestconfig.Interface{network.UserModeInterface()}
		result.devices = []govmm.Device{nic}
		return result, nil
	}

	nets, err := network.LoadNetworks(spec, flags.LocalConfig)
	if err != nil {
		return result, err
	}
	if err := pod.CheckDeviceCount(len(cfg.Apps), volumeShares(cfg), len(nets)); err != nil {
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
