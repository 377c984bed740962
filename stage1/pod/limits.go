package pod

import (
	"errors"
	"fmt"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
)

// MMIOLines is the number of interrupt lines that QEMU's microvm machine
// (with ioapic2=on, QEMU 7.2) gives virtio-mmio devices: one per device.
const MMIOLines = 24

// FixedDevices are the virtio-mmio devices of every pod VM: the
// virtio-serial controller, the system, config and journal shares and the
// RNG.
const FixedDevices = 5

// MaxApps is the most apps a pod can have: each app's rootfs is a 9p share,
// one virtio-mmio device. Each network interface takes one more.
const MaxApps = MMIOLines - FixedDevices

// CheckDeviceCount rejects a pod whose app shares, volume share and
// network interfaces need more virtio-mmio devices than the machine has
// interrupt lines. A pod with volumes has one volume share.
func CheckDeviceCount(apps, volumeShares, nics int) error {
	if FixedDevices+apps+volumeShares+nics <= MMIOLines {
		return nil
	}
	what := fmt.Sprintf("%d apps", apps)
	if volumeShares > 0 {
		what += ", volumes"
	}
	what += fmt.Sprintf(" and %d network interfaces", nics)
	return fmt.Errorf("the pod has %s, which need %d virtio devices besides the %d every pod VM has, but the VM has lines for %d: use fewer apps or networks (apps, networks and the volume share at most %d)",
		what, apps+volumeShares+nics, FixedDevices, MMIOLines, MaxApps)
}

// maxAppNameLength keeps "app-<name>.service" within the 255 bytes that a
// unit file name may have.
const maxAppNameLength = 200

// checkSupported rejects what this version cannot run faithfully yet, so
// that a pod never runs with a setting silently dropped. Each error names
// the field and the value.
func checkSupported(pm *schema.PodManifest) error {
	if len(pm.Apps) > MaxApps {
		return fmt.Errorf("the pod has %d apps; a pod VM runs at most %d", len(pm.Apps), MaxApps)
	}
	if len(pm.Isolators) > 0 {
		return fmt.Errorf("pod isolator %q: isolators are not supported yet", pm.Isolators[0].Name)
	}
	for _, ra := range pm.Apps {
		if err := checkApp(ra); err != nil {
			return fmt.Errorf("app %s: %w", ra.Name, err)
		}
	}
	return nil
}

func checkApp(ra schema.RuntimeApp) error {
	if len(ra.Name) > maxAppNameLength {
		return fmt.Errorf("the name has %d characters; at most %d are supported", len(ra.Name), maxAppNameLength)
	}
	app := ra.App
	if app == nil {
		return nil
	}
	for _, eh := range app.EventHandlers {
		if err := checkStrings(eh.Exec, nil); err != nil {
			return fmt.Errorf("event handler %s: %w", eh.Name, err)
		}
	}
	return checkStrings(app.Exec, app.Environment)
}

// maxArgLength is the longest single argument or NAME=value string that
// execve(2) takes: Linux's MAX_ARG_STRLEN of 32 pages, with the NUL.
const maxArgLength = 32*4096 - 1

// checkStrings rejects NUL bytes and strings longer than maxArgLength,
// which execve(2) cannot pass.
func checkStrings(exec types.Exec, env types.Environment) error {
	for i, arg := range exec {
		if strings.ContainsRune(arg, 0) {
			return fmt.Errorf("exec[%d] contains a NUL byte, which no program can receive", i)
		}
		if len(arg) > maxArgLength {
			return fmt.Errorf("exec[%d] has %d bytes; Linux passes at most %d in one argument", i, len(arg), maxArgLength)
		}
	}
	for _, kv := range env {
		if kv.Name == "" || strings.ContainsAny(kv.Name, "=\x00") {
			return fmt.Errorf("invalid environment variable name %q", kv.Name)
		}
		if strings.ContainsRune(kv.Value, 0) {
			return fmt.Errorf("environment variable %s contains a NUL byte, which no program can receive", kv.Name)
		}
		if n := len(kv.Name) + 1 + len(kv.Value); n > maxArgLength {
			return fmt.Errorf("environment variable %s has %d bytes with its name; Linux passes at most %d in one variable", kv.Name, n, maxArgLength)
		}
	}
	return nil
}

// errReservedID is returned for uid or gid 4294967295, which is (uid_t)-1
// and means "no change" to setuid(2).
var errReservedID = errors.New("4294967295 is (uid_t)-1, which the kernel reserves")
