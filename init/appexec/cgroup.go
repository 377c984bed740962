package appexec

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// cgroupRoot is the mount point of the guest's cgroup v2 hierarchy.
const cgroupRoot = "/sys/fs/cgroup"

// appCgroup is the child of the app unit's cgroup that contains the app.
// The limits go there rather than on the unit, so that the unit's helpers
// (app-exited, the post-stop handler) never count against them. An app
// that uses up its memory then still gets its exit status to the host.
const appCgroup = "app"

// enterAppCgroup moves the calling process into the app's cgroup and sets
// its limits. The unit has Delegate=yes, so the subtree is this process's.
func enterAppCgroup(app guestconfig.App) error {
	unitDir, err := ownCgroup()
	if err != nil {
		return err
	}
	dir := filepath.Join(unitDir, appCgroup)
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	// A cgroup with processes cannot pass controllers to its children, so
	// the process moves first.
	if err := writeCgroupFile(dir, "cgroup.procs", "0"); err != nil {
		return err
	}
	if err := writeCgroupFile(unitDir, "cgroup.subtree_control", "+memory +cpu"); err != nil {
		return err
	}
	if app.MemoryMax > 0 {
		// The whole app goes when it runs out of memory, as a systemd
		// service does by default, rather than whichever process the
		// kernel picks.
		if err := writeCgroupFile(dir, "memory.oom.group", "1"); err != nil {
			return err
		}
		if err := writeCgroupFile(dir, "memory.max", fmt.Sprint(app.MemoryMax)); err != nil {
			return err
		}
	}
	if app.CPUMillis > 0 {
		if err := writeCgroupFile(dir, "cpu.max", cpuMax(app.CPUMillis)); err != nil {
			return err
		}
	}
	if app.CPUWeight > 0 {
		if err := writeCgroupFile(dir, "cpu.weight", fmt.Sprint(app.CPUWeight)); err != nil {
			return err
		}
	}
	return nil
}

// cpuPeriodMicros is the period of the apps' CPU quota.
const cpuPeriodMicros = 100_000

// minCPUQuotaMicros is the smallest quota the kernel accepts in cpu.max.
const minCPUQuotaMicros = 1000

// cpuMax returns the cpu.max value for a limit of millis thousandths of a
// CPU. A limit below 10m is raised to 1 ms a period, the smallest quota
// that the kernel accepts.
func cpuMax(millis uint64) string {
	quota := max(millis*cpuPeriodMicros/1000, minCPUQuotaMicros)
	return fmt.Sprintf("%d %d", quota, cpuPeriodMicros)
}

// ownCgroup returns the cgroup v2 folder of the calling process.
func ownCgroup() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(cgroupRoot, path), nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 entry in /proc/self/cgroup: %q", data)
}

func writeCgroupFile(dir, name, value string) error {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}
