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
// virtio-serial controller, the system, config, apps and journal shares
// and the RNG.
const FixedDevices = 6

// CheckDeviceCount rejects a pod whose volume share and network interfaces
// need more virtio-mmio devices than the machine has interrupt lines. A pod
// with volumes has one volume share. Apps take no device of their own: all
// of them are views of the apps share.
func CheckDeviceCount(volumeShares, nics int) error {
	if FixedDevices+volumeShares+nics <= MMIOLines {
		return nil
	}
	return fmt.Errorf("the pod has %d network interfaces, but its VM has interrupt lines for %d: use fewer networks",
		nics, MMIOLines-FixedDevices-volumeShares)
}

// maxAppNameLength keeps "app-<name>.service" within the 255 bytes that a
// unit file name may have.
const maxAppNameLength = 200

// checkSupported rejects what this version cannot run faithfully yet, so
// that a pod never runs with a setting silently dropped. Each error names
// the field and the value.
func checkSupported(pm *schema.PodManifest) error {
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
