package pod

import (
	"errors"
	"fmt"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
)

// MaxApps is the most apps a pod can have. The microvm machine has 24
// interrupt lines for virtio-mmio devices, and besides one 9p share an app
// the VM needs the serial ports, the system and config shares and an RNG.
// A pod with volumes needs one more line for the volume share.
const MaxApps = 20

// maxAppNameLength keeps "app-<name>.service" within the 255 bytes that a
// unit file name may have.
const maxAppNameLength = 200

// checkSupported rejects what this version cannot run faithfully yet, so
// that a pod never runs with a setting silently dropped. Each error names
// the field and the value.
func checkSupported(podDir string, pm *schema.PodManifest) error {
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

// checkStrings rejects NUL bytes, which execve(2) cannot pass.
func checkStrings(exec types.Exec, env types.Environment) error {
	for i, arg := range exec {
		if strings.ContainsRune(arg, 0) {
			return fmt.Errorf("exec[%d] contains a NUL byte, which no program can receive", i)
		}
	}
	for _, kv := range env {
		if kv.Name == "" || strings.ContainsAny(kv.Name, "=\x00") {
			return fmt.Errorf("invalid environment variable name %q", kv.Name)
		}
		if strings.ContainsRune(kv.Value, 0) {
			return fmt.Errorf("environment variable %s contains a NUL byte, which no program can receive", kv.Name)
		}
	}
	return nil
}

// errReservedID is returned for uid or gid 4294967295, which is (uid_t)-1
// and means "no change" to setuid(2).
var errReservedID = errors.New("4294967295 is (uid_t)-1, which the kernel reserves")
