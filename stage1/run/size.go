package run

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// Guest memory rule. A pod whose apps set no memory limit gets
// GuestMemoryMiB. Otherwise the VM gets GuestOverheadMiB for the kernel,
// systemd and the guest agent, plus each app's limit, plus
// UnlimitedAppMiB for each app without a limit. Either way, each vCPU
// after the first adds VCPUMemoryMiB.
const (
	// GuestMemoryMiB is the RAM of a pod without memory limits.
	GuestMemoryMiB = 128
	// GuestOverheadMiB is what the guest itself needs: a pod with one app
	// limited to 4 MiB boots and runs in GuestOverheadMiB + 4 MiB.
	GuestOverheadMiB = 64
	// UnlimitedAppMiB is counted for an app without a memory limit in a
	// pod where other apps have one.
	UnlimitedAppMiB = 64
	// VCPUMemoryMiB is what the guest kernel keeps for each further vCPU:
	// 16 vCPUs left 9.2 MiB less available memory than one (0.6 MiB each).
	VCPUMemoryMiB = 1
)

// MaxVCPUs is the most vCPUs a VM gets: the guest kernel's NR_CPUS, beyond
// which it ignores the rest.
const MaxVCPUs = 64

const mib = 1 << 20

// vmSize returns the VM's RAM in MiB and its number of vCPUs for a pod. The
// vCPUs are the sum of the apps' CPU limits rounded up, at least 1 and at
// most hostCPUs. A pod whose apps set no CPU limit gets hostCPUs, as rkt's
// KVM stage1 gives it and as its apps would see in a container. Both
// counts stop at MaxVCPUs. hostMemory is the host's RAM in bytes.
func vmSize(pod *guestconfig.Pod, hostMemory uint64, hostCPUs int) (memMiB, cpus int, err error) {
	// The sum is in KiB, so that limits of up to 2^63 bytes from twenty
	// apps cannot wrap around to a small VM.
	totalKiB := uint64(GuestOverheadMiB * 1024)
	var limited bool
	var millis uint64
	for _, app := range pod.Apps {
		if app.MemoryMax > 0 {
			limited = true
			totalKiB += (app.MemoryMax + 1023) / 1024
		} else {
			totalKiB += UnlimitedAppMiB * 1024
		}
		millis += app.CPUMillis
	}

	cpus = int((millis + 999) / 1000)
	if millis == 0 {
		cpus = hostCPUs
	}
	if hostCPUs > 0 && cpus > hostCPUs {
		cpus = hostCPUs
	}
	cpus = min(max(cpus, 1), MaxVCPUs)
	vcpuMiB := uint64(cpus-1) * VCPUMemoryMiB

	memMiB = GuestMemoryMiB + int(vcpuMiB)
	if limited {
		totalMiB := (totalKiB+1023)/1024 + vcpuMiB
		if hostMemory > 0 && totalMiB > hostMemory/mib {
			return 0, 0, fmt.Errorf("the apps' memory limits need a VM of %d MiB, more than the host's %d MiB; lower the resource/memory limits", totalMiB, hostMemory/mib)
		}
		memMiB = int(totalMiB)
	}
	return memMiB, cpus, nil
}

// UnlimitedVMSize returns the RAM in MiB and the vCPUs of the VM of a pod
// whose apps set no memory or CPU limit, on a host with hostCPUs CPUs.
func UnlimitedVMSize(hostCPUs int) (memMiB, cpus int) {
	memMiB, cpus, _ = vmSize(&guestconfig.Pod{Apps: []guestconfig.App{{}}}, 0, hostCPUs)
	return memMiB, cpus
}

// hostResources returns the host's RAM in bytes, from /proc/meminfo, and its
// number of CPUs.
func hostResources() (uint64, int, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse MemTotal in /proc/meminfo: %w", err)
			}
			return kib * 1024, runtime.NumCPU(), nil
		}
	}
	return 0, 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// MutableMemoryMiB is the least RAM of a mutable pod (rkt app sandbox),
// whose apps are added after the boot. The guest only touches what its
// apps use, so the unused part costs the host little.
const MutableMemoryMiB = 512

// mutableVMSize returns the RAM and vCPUs of a mutable pod: at least
// MutableMemoryMiB, at most the host's RAM, and one vCPU per host CPU.
func mutableVMSize(memMiB int, hostMemory uint64, hostCPUs int) (int, int) {
	memMiB = max(memMiB, MutableMemoryMiB)
	if hostMemory > 0 {
		memMiB = min(memMiB, int(hostMemory/mib))
	}
	return memMiB, min(max(hostCPUs, 1), MaxVCPUs)
}
