package pod

import (
	"fmt"
	"sort"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// DefaultCapabilities is the bounding set of an app without a capabilities
// isolator, as the appc specification lists it for Linux.
var DefaultCapabilities = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID",
	"CAP_FOWNER", "CAP_KILL", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETFCAP", "CAP_SYS_CHROOT",
}

// capabilityNumbers maps capability names to their numbers in
// linux/capability.h (kernel 6.1).
var capabilityNumbers = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7,
	"CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// maxCPULimit bounds a CPU limit, in CPUs, far above any host; the VM's
// vCPUs are capped at the host's anyway.
const maxCPULimit = 1 << 20

// applyIsolators sets the app's resource limits and privileges from its
// isolators. An isolator this version cannot apply is an error, so that an
// app never runs with less isolation than its manifest requests.
func applyIsolators(app *guestconfig.App, isolators types.Isolators, opts Options) error {
	var retain, remove []string
	for _, iso := range isolators {
		switch v := iso.Value().(type) {
		case *types.ResourceMemory:
			if limit := v.Limit(); limit != nil {
				bytes := limit.Value()
				if bytes <= 0 {
					return fmt.Errorf("isolator %s: limit %s must be positive", iso.Name, limit)
				}
				app.MemoryMax = uint64(bytes)
			}
		case *types.ResourceCPU:
			if limit := v.Limit(); limit != nil {
				if limit.Value() > maxCPULimit {
					return fmt.Errorf("isolator %s: limit %s is too large; use at most %d CPUs", iso.Name, limit, maxCPULimit)
				}
				millis := limit.MilliValue()
				if millis <= 0 {
					return fmt.Errorf("isolator %s: limit %s must be positive", iso.Name, limit)
				}
				app.CPUMillis = uint64(millis)
			}
		case *types.LinuxCPUShares:
			app.CPUWeight = cpuWeight(int(*v))
		case *types.LinuxOOMScoreAdj:
			adj := int(*v)
			app.OOMScoreAdjust = &adj
		case *types.LinuxNoNewPrivileges:
			app.NoNewPrivileges = bool(*v)
		case *types.LinuxCapabilitiesRetainSet:
			retain = append(retain, capabilityNames(v.Set())...)
		case *types.LinuxCapabilitiesRevokeSet:
			remove = append(remove, capabilityNames(v.Set())...)
		case *types.LinuxSeccompRetainSet, *types.LinuxSeccompRemoveSet:
			// Read below, with the default filter.
		case nil:
			return fmt.Errorf("isolator %q is unknown; remove it from the image or pod manifest", iso.Name)
		default:
			return fmt.Errorf("isolator %q is not supported yet", iso.Name)
		}
	}
	if len(retain) > 0 && len(remove) > 0 {
		return fmt.Errorf("isolators %s and %s cannot be used together", types.LinuxCapabilitiesRetainSetName, types.LinuxCapabilitiesRevokeSetName)
	}
	caps, err := boundingSet(retain, remove)
	if err != nil {
		return err
	}
	if !opts.DisableCapabilities {
		app.RestrictCapabilities = true
		app.Capabilities = caps
	}
	if !opts.DisableSeccomp {
		if app.Seccomp, err = seccompFilter(isolators); err != nil {
			return err
		}
		// Without CAP_SYS_ADMIN, which an app of another user lacks,
		// the kernel loads a filter only under no_new_privs.
		if app.Seccomp != nil && app.UID != 0 {
			app.NoNewPrivileges = true
		}
	}
	return nil
}

// boundingSet returns the capability numbers of an app: the retain set when
// given, else the default set without the remove set.
func boundingSet(retain, remove []string) ([]uint, error) {
	names := retain
	if len(retain) == 0 {
		removed := map[string]bool{}
		for _, c := range remove {
			removed[c] = true
		}
		names = nil
		for _, c := range DefaultCapabilities {
			if !removed[c] {
				names = append(names, c)
			}
		}
	}
	for _, c := range remove {
		if _, ok := capabilityNumbers[c]; !ok {
			return nil, fmt.Errorf("unknown capability %q in %s; use names such as CAP_NET_ADMIN", c, types.LinuxCapabilitiesRevokeSetName)
		}
	}
	seen := map[uint]bool{}
	var caps []uint
	for _, c := range names {
		n, ok := capabilityNumbers[c]
		if !ok {
			return nil, fmt.Errorf("unknown capability %q in %s; use names such as CAP_NET_ADMIN", c, types.LinuxCapabilitiesRetainSetName)
		}
		if !seen[n] {
			seen[n] = true
			caps = append(caps, n)
		}
	}
	sort.Slice(caps, func(i, j int) bool { return caps[i] < caps[j] })
	return caps, nil
}

func capabilityNames(set []types.LinuxCapability) []string {
	names := make([]string, len(set))
	for i, c := range set {
		names[i] = string(c)
	}
	return names
}

// cpuWeight converts cgroup v1 CPU shares (2 to 262144, 1024 by default)
// into the cgroup v2 weight (1 to 10000, 100 by default) in proportion.
func cpuWeight(shares int) uint64 {
	w := uint64(shares) * 100 / 1024
	if w < 1 {
		w = 1
	}
	if w > 10000 {
		w = 10000
	}
	return w
}
