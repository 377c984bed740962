package run

import (
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

func TestVMSize(t *testing.T) {
	const host = 8 << 30
	cases := []struct {
		name     string
		apps     []guestconfig.App
		wantMiB  int
		wantCPUs int
	}{
		// Without CPU limits the VM gets the host's 4 CPUs and 3 MiB for
		// the three vCPUs after the first.
		{"no limits", []guestconfig.App{{}, {}}, GuestMemoryMiB + 3, 4},
		{"one tiny limit", []guestconfig.App{{MemoryMax: 4 << 20}}, GuestOverheadMiB + 4 + 3, 4},
		{"one tiny limit and one CPU", []guestconfig.App{{MemoryMax: 4 << 20, CPUMillis: 100}}, GuestOverheadMiB + 4, 1},
		{"limit and unlimited app", []guestconfig.App{{MemoryMax: 42 << 20, CPUMillis: 1000}, {}}, GuestOverheadMiB + 42 + UnlimitedAppMiB, 1},
		{"limit rounded up to MiB", []guestconfig.App{{MemoryMax: 64_000_000, CPUMillis: 250}}, GuestOverheadMiB + 62, 1},
		{"cpu sum rounded up", []guestconfig.App{{CPUMillis: 500}, {CPUMillis: 600}}, GuestMemoryMiB + 1, 2},
		{"cpu limit of one app only", []guestconfig.App{{CPUMillis: 500}, {}}, GuestMemoryMiB, 1},
		{"cpu capped at the host", []guestconfig.App{{CPUMillis: 9000}}, GuestMemoryMiB + 3, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem, cpus, err := vmSize(&guestconfig.Pod{Apps: c.apps}, host, 4)
			if err != nil {
				t.Fatal(err)
			}
			if mem != c.wantMiB {
				t.Errorf("memory = %d MiB, want %d", mem, c.wantMiB)
			}
			if cpus != c.wantCPUs {
				t.Errorf("vCPUs = %d, want %d", cpus, c.wantCPUs)
			}
		})
	}
}

func TestVMSizeAboveHostMemory(t *testing.T) {
	_, _, err := vmSize(&guestconfig.Pod{Apps: []guestconfig.App{{MemoryMax: 2 << 30}}}, 1<<30, 2)
	if err == nil || !strings.Contains(err.Error(), "more than the host's 1024 MiB") {
		t.Errorf("error = %v, want one naming the host's memory", err)
	}
}

func TestVMSizeLimitsDoNotWrap(t *testing.T) {
	huge := uint64(1<<63 - 1)
	_, _, err := vmSize(&guestconfig.Pod{Apps: []guestconfig.App{{MemoryMax: huge}, {MemoryMax: huge}, {MemoryMax: 10485762}}}, 24<<30, 2)
	if err == nil || !strings.Contains(err.Error(), "more than the host's") {
		t.Errorf("error = %v, want the limits rejected as above the host's memory", err)
	}
}

func TestVMSizeCappedAtKernelCPUs(t *testing.T) {
	mem, cpus, err := vmSize(&guestconfig.Pod{Apps: []guestconfig.App{{}}}, 1<<40, 192)
	if err != nil {
		t.Fatal(err)
	}
	if cpus != MaxVCPUs || mem != GuestMemoryMiB+MaxVCPUs-1 {
		t.Errorf("on a 192-CPU host: %d vCPUs and %d MiB, want %d and %d", cpus, mem, MaxVCPUs, GuestMemoryMiB+MaxVCPUs-1)
	}
	if _, cpus := mutableVMSize(MutableMemoryMiB, 1<<40, 192); cpus != MaxVCPUs {
		t.Errorf("mutable pod on a 192-CPU host: %d vCPUs, want %d", cpus, MaxVCPUs)
	}
}
