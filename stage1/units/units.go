// Package units writes the systemd units that run a pod's apps in the guest.
//
// The guest boots stage1-vm.target. It starts the agent, which owns the
// guest's ports, the power-button service, which turns the host's
// fallback stop into a reboot, and journald. Once the agent and journald
// run, it starts one service for each app, then stage1-vm-ready.service,
// which reports to the host that every app has started. Each app service
// runs the guest binary's app-exec command, which enters the app's rootfs
// and execs the app. Its ExecStopPost reports the exit status to the
// agent, which decides when the pod ends.
package units

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// DefaultStopTimeoutSeconds is the apps' grace period when the pod
// configuration sets none.
const DefaultStopTimeoutSeconds = 10

// Target is the unit the guest's systemd boots into.
const Target = "stage1-vm.target"

// Units of the guest journal, which the image ships. The agent makes
// journald write to the journal share once it started.
const (
	JournaldSocket = "systemd-journald.socket"
	JournaldUnit   = "systemd-journald.service"
)

// AppUnit returns the unit name of an app.
func AppUnit(app string) string {
	return guestconfig.AppUnit(app)
}

// Render returns the units of a pod by file name.
func Render(pod *guestconfig.Pod) map[string]string {
	init := guestconfig.GuestInit
	var appUnits []string
	for _, app := range pod.Apps {
		appUnits = append(appUnits, AppUnit(app.Name))
	}

	files := map[string]string{}
	wants := append([]string{"stage1-vm-agent.service", "stage1-vm-power-button.service"}, appUnits...)
	wants = append(wants, "stage1-vm-ready.service")
	// The apps start after journald, which systemd starts with them
	// because the target wants it.
	files[Target] = lines(
		"[Unit]",
		"Description=stage1-vm pod "+pod.UUID,
		"Wants="+strings.Join(append(wants, JournaldUnit), " "),
		"After="+strings.Join(wants, " "),
	)

	files["stage1-vm-agent.service"] = lines(
		"[Unit]",
		"Description=stage1-vm guest agent",
		"DefaultDependencies=no",
		"Wants="+JournaldSocket,
		"After="+JournaldSocket,
		// At shutdown, systemd unmounts the journal share only after the
		// agent made journald sync it.
		"RequiresMountsFor="+filepath.Join(guestconfig.GuestJournalDir, guestconfig.MachineID(pod.UUID)),
		"Conflicts=shutdown.target",
		"Before=shutdown.target",
		"",
		"[Service]",
		"Type=notify",
		"ExecStart="+init+" agent",
		// Without the agent no status reaches the host, so the pod would
		// never end; a reboot ends QEMU and the host reports the failure.
		"FailureAction=reboot-force",
		"StandardOutput=file:/dev/kmsg",
		"StandardError=file:/dev/kmsg",
		// At stop, the agent waits up to 5 s for journald to store the
		// apps' last lines, then syncs the shares.
		"TimeoutStopSec=8",
	)

	files["stage1-vm-power-button.service"] = lines(
		"[Unit]",
		"Description=stage1-vm ACPI power button, the host's fallback stop",
		"DefaultDependencies=no",
		"Conflicts=shutdown.target",
		"Before=shutdown.target",
		"",
		"[Service]",
		"Type=simple",
		"ExecStart="+init+" power-button",
		"StandardOutput=file:/dev/kmsg",
		"StandardError=file:/dev/kmsg",
	)

	for _, app := range pod.Apps {
		files[AppUnit(app.Name)] = appUnit(pod, app)
	}

	files["stage1-vm-ready.service"] = lines(
		"[Unit]",
		"Description=stage1-vm pod ready",
		"DefaultDependencies=no",
		"After="+strings.Join(append([]string{"stage1-vm-agent.service"}, appUnits...), " "),
		"",
		"[Service]",
		"Type=oneshot",
		"ExecStart="+init+" notify-ready",
		"StandardOutput=file:/dev/kmsg",
		"StandardError=file:/dev/kmsg",
	)
	return files
}

// AppUnits returns the units of one app by file name, for an app that
// joins a mutable pod at run time.
func AppUnits(pod *guestconfig.Pod, app guestconfig.App) map[string]string {
	return map[string]string{AppUnit(app.Name): appUnit(pod, app)}
}

// appUnit returns the service that runs an app.
func appUnit(pod *guestconfig.Pod, app guestconfig.App) string {
	stopTimeout := pod.StopTimeoutSeconds
	if stopTimeout <= 0 {
		stopTimeout = DefaultStopTimeoutSeconds
	}
	init := guestconfig.GuestInit
	unit := []string{
		"[Unit]",
		"Description=app " + app.Name,
		"DefaultDependencies=no",
		"Requires=stage1-vm-agent.service",
		// journald needs about 0.5 s of guest CPU time to start under
		// TCG, and apps that started with it ran slower in their first
		// second. Ordered after it, they start later but do not share
		// the CPU with it, and their output reaches the journal as they
		// write it.
		"After=stage1-vm-agent.service " + JournaldUnit,
		"Conflicts=shutdown.target",
		"Before=shutdown.target",
		"",
		"[Service]",
		"Type=simple",
		"ExecStart=" + init + " app-exec " + app.Name,
	}
	if len(app.PostStop) > 0 {
		// The post-stop handler runs before the exit status is
		// reported, and its failure does not change that status.
		unit = append(unit, "ExecStopPost=-"+init+" post-stop "+app.Name)
	}
	unit = append(unit,
		"ExecStopPost="+init+" app-exited "+app.Name,
		"Restart=no",
		"KillMode=mixed",
		// The grace period between SIGTERM and SIGKILL.
		fmt.Sprintf("TimeoutStopSec=%d", stopTimeout),
		"StandardInput=null",
		// app-exec connects the app's stdout and stderr to the agent
		// itself; these catch only its own errors before that.
		"StandardOutput=file:/dev/kmsg",
		"StandardError=file:/dev/kmsg",
	)
	return lines(append(unit, resourceLines(app)...)...)
}

// resourceLines returns the app unit's cgroup and OOM settings. app-exec
// sets the app's limits in a child cgroup of the unit, which Delegate=
// hands to it; the app inherits its oom_score_adj from app-exec.
func resourceLines(app guestconfig.App) []string {
	var l []string
	if app.HasResourceLimits() {
		l = append(l, "Delegate=yes")
	}
	if app.OOMScoreAdjust != nil {
		l = append(l, fmt.Sprintf("OOMScoreAdjust=%d", *app.OOMScoreAdjust))
	}
	return l
}

// Write renders the units of a pod into dir.
func Write(dir string, pod *guestconfig.Pod) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create units folder: %w", err)
	}
	for name, content := range Render(pod) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write unit %s: %w", name, err)
		}
	}
	return nil
}

func lines(l ...string) string {
	return strings.Join(l, "\n") + "\n"
}
