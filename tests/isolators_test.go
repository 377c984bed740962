package tests

import (
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/appc/spec/schema/types"

	stage1run "github.com/stage1-vm/stage1-vm/stage1/run"
	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

func isolator(t *testing.T, name, value string) types.Isolator {
	t.Helper()
	var iso types.Isolator
	if err := json.Unmarshal([]byte(`{"name":"`+name+`","value":`+value+`}`), &iso); err != nil {
		t.Fatalf("isolator %s %s: %v", name, value, err)
	}
	return iso
}

// TestIsolatorsApplied runs a limited app and an inspector app that mounts
// the guest's cgroup tree and reads the limited app's settings. The VM gets
// the guest overhead plus 42 MiB plus one unlimited app's share of RAM plus
// 1 MiB for the second vCPU, and two vCPUs for a limit of 1.5 CPUs.
func TestIsolatorsApplied(t *testing.T) {
	d := newDriver(t)
	limited := busyboxApp(t, "limited", "/bin/sh", "-c", `
		grep -E "^(CapBnd|CapEff|NoNewPrivs):" /proc/self/status
		cat /proc/self/oom_score_adj
		echo done > /tmp/limited-ran
		sleep 3`)
	limited.App.Isolators = types.Isolators{
		isolator(t, "resource/memory", `{"limit":"42Mi"}`),
		isolator(t, "resource/cpu", `{"limit":"1500m"}`),
		isolator(t, "os/linux/cpu-shares", `512`),
		isolator(t, "os/linux/oom-score-adj", `100`),
		isolator(t, "os/linux/capabilities-retain-set", `{"set":["CAP_NET_ADMIN","CAP_CHOWN"]}`),
		isolator(t, "os/linux/no-new-privileges", `true`),
	}
	inspector := busyboxApp(t, "inspector", "/bin/sh", "-c", `
		sleep 1
		mkdir -p /cg && mount -t cgroup2 none /cg
		dir=/cg/system.slice/app-limited.service/app
		echo "memory.max $(cat $dir/memory.max)"
		echo "cpu.max $(cat $dir/cpu.max)"
		echo "cpu.weight $(cat $dir/cpu.weight)"
		echo "nproc $(nproc)"
		grep MemTotal /proc/meminfo`)
	inspector.App.Isolators = types.Isolators{
		isolator(t, "os/linux/capabilities-retain-set", `{"set":["CAP_SYS_ADMIN"]}`),
		isolator(t, "os/linux/seccomp-retain-set", `{"set":["@appc.io/all"]}`),
	}
	res := run(t, d, []stage0.App{limited, inspector}, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	// CAP_CHOWN is bit 0 and CAP_NET_ADMIN bit 12.
	for _, want := range []string{
		"CapBnd:\t0000000000001001\n",
		"CapEff:\t0000000000001001\n",
		"NoNewPrivs:\t1\n",
		"\n100\n",
		"memory.max 44040192\n",
		"cpu.max 150000 100000\n",
		"cpu.weight 50\n",
		"nproc 2\n",
	} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, res.Stdout)
		}
	}
	// RAM: 64 MiB overhead, 42 MiB for the limited app, 64 MiB for the
	// inspector, 1 MiB for the second vCPU: 171 MiB, of which the kernel
	// keeps a few for itself.
	memTotal := fieldAfter(res.Stdout, "MemTotal:")
	kib, err := strconv.Atoi(memTotal)
	if err != nil {
		t.Fatalf("no MemTotal in the output:\n%s", res.Stdout)
	}
	if kib > 171*1024 || kib < 141*1024 {
		t.Errorf("guest MemTotal = %d KiB, want a VM of 171 MiB", kib)
	}
}

// TestTinyCPULimitRuns checks that a CPU limit below the kernel's smallest
// quota (1 ms in each 100 ms period) still runs the app. TestCPUMax in
// init/appexec checks the quota it gets.
func TestTinyCPULimitRuns(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "tiny", "/bin/sh", "-c", "echo ran")
	app.App.Isolators = types.Isolators{isolator(t, "resource/cpu", `{"limit":"1m"}`)}
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if res.Stdout != "ran\n" {
		t.Errorf("stdout = %q, want %q", res.Stdout, "ran\n")
	}
}

// TestVCPUsWithoutLimits checks that a pod whose apps set no CPU limit gets
// a vCPU per host CPU, as rkt's KVM stage1 gives it. With several vCPUs
// under TCG, the guest must keep the TSC as its clock instead of falling
// back to jiffies, which tick every 4 ms.
func TestVCPUsWithoutLimits(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "counter", "/bin/sh", "-c",
		`echo "nproc $(nproc)"; echo "clock $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"`)
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	want := min(runtime.NumCPU(), stage1run.MaxVCPUs)
	if got := fieldAfter(res.Stdout, "nproc"); got != strconv.Itoa(want) {
		t.Errorf("guest CPUs = %q, want %d (the host's):\n%s", got, want, res.Stdout)
	}
	if clock := fieldAfter(res.Stdout, "clock"); clock != "tsc" && clock != "kvm-clock" {
		t.Errorf("guest clocksource = %q, want tsc or kvm-clock:\n%s", clock, res.Stdout)
	}
}

func fieldAfter(s, key string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, key) {
			if f := strings.Fields(strings.TrimPrefix(line, key)); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// TestDefaultCapabilities checks the appc default bounding set of a root
// app, and the full set with --disable-capabilities-restriction.
func TestDefaultCapabilities(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "caps", "/bin/sh", "-c", `grep ^CapBnd: /proc/self/status`)
	res := run(t, d, []stage0.App{app}, nil)
	// The appc default set: bits 0-1, 3-8, 10, 13, 18, 27, 29, 31.
	if want := "CapBnd:\t00000000a80425fb\n"; res.Stdout != want {
		t.Errorf("default bounding set: stdout = %q, want %q", res.Stdout, want)
	}
	res = run(t, d, []stage0.App{app}, []string{"--net=none", "--disable-capabilities-restriction"})
	if want := "CapBnd:\t000001ffffffffff\n"; res.Stdout != want {
		t.Errorf("unrestricted bounding set: stdout = %q, want %q", res.Stdout, want)
	}
}

func TestTinyMemoryLimitBoots(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "tiny", "/bin/sh", "-c", "echo small")
	app.App.Isolators = types.Isolators{isolator(t, "resource/memory", `{"limit":"4M"}`)}
	res := run(t, d, []stage0.App{app}, nil)
	if res.ExitCode != 0 || res.Stdout != "small\n" {
		t.Errorf("exit status %d, stdout %q, want 0 and small; stderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func TestIsolatorErrorsBeforeBoot(t *testing.T) {
	d := newDriver(t)
	cases := []struct {
		name, isoName, value, want string
	}{
		{"memory above the host", "resource/memory", `{"limit":"100Ti"}`, "more than the host's"},
		{"unknown capability", "os/linux/capabilities-retain-set", `{"set":["CAP_FLY"]}`, `unknown capability "CAP_FLY"`},
		{"unsupported isolator", "os/unix/sysctl", `{"net.ipv4.ip_forward":"1"}`, `"os/unix/sysctl" is not supported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			app := busyboxApp(t, "app", "/bin/true")
			app.App.Isolators = types.Isolators{isolator(t, c.isoName, c.value)}
			res := run(t, d, []stage0.App{app}, nil)
			if res.ExitCode != 254 {
				t.Errorf("exit status %d, want 254", res.ExitCode)
			}
			if !strings.Contains(res.Stderr, c.want) {
				t.Errorf("stderr lacks %q:\n%s", c.want, res.Stderr)
			}
			if res.Ready {
				t.Error("the pod booted")
			}
		})
	}
}

// TestKernelPathsProtected checks that an app with every capability cannot
// change vm.panic_on_oom or list /sys/fs, unless the pod runs with
// --disable-paths.
func TestKernelPathsProtected(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "paths", "/bin/sh", "-c", `
		echo 0 > /proc/sys/vm/panic_on_oom 2>/dev/null && echo sysctl-written || echo sysctl-denied
		echo "sys-fs $(ls /sys/fs | wc -l)"`)
	res := run(t, d, []stage0.App{app}, []string{"--net=none", "--disable-capabilities-restriction"})
	if want := "sysctl-denied\nsys-fs 0\n"; res.Stdout != want {
		t.Errorf("protected: stdout = %q, want %q", res.Stdout, want)
	}
	res = run(t, d, []stage0.App{app}, []string{"--net=none", "--disable-capabilities-restriction", "--disable-paths"})
	if !strings.HasPrefix(res.Stdout, "sysctl-written\n") || strings.Contains(res.Stdout, "sys-fs 0\n") {
		t.Errorf("with --disable-paths: stdout = %q, want panic_on_oom written and /sys/fs listed", res.Stdout)
	}
}

// TestSeccompFilters checks the default filter, which kills an app that
// calls mount, a remove set with an errno, and --disable-seccomp.
func TestSeccompFilters(t *testing.T) {
	d := newDriver(t)
	mounter := busyboxApp(t, "mounter", "/bin/sh", "-c", `mkdir -p /m; mount -t tmpfs none /m; echo "mount=$?"; grep ^NoNewPrivs /proc/self/status`)
	mounter.App.User = "1000"
	res := run(t, d, []stage0.App{mounter}, nil)
	// 159 is 128 + SIGSYS; a user other than root gets no_new_privs with
	// the filter.
	if want := "mount=159\nNoNewPrivs:\t1\n"; res.Stdout != want {
		t.Errorf("default filter: stdout = %q, want %q", res.Stdout, want)
	}

	res = run(t, d, []stage0.App{mounter}, []string{"--net=none", "--disable-seccomp"})
	if strings.Contains(res.Stdout, "mount=159") || !strings.Contains(res.Stdout, "NoNewPrivs:\t0") {
		t.Errorf("--disable-seccomp: stdout = %q, want mount to fail without SIGSYS and no no_new_privs", res.Stdout)
	}

	namer := busyboxApp(t, "namer", "/bin/sh", "-c", `echo "[$(uname -s 2>/dev/null)]"; echo still-running`)
	namer.App.Isolators = types.Isolators{isolator(t, "os/linux/seccomp-remove-set", `{"set":["uname"],"errno":"ENOSYS"}`)}
	res = run(t, d, []stage0.App{namer}, nil)
	// busybox's uname prints nothing when uname(2) fails.
	if want := "[]\nstill-running\n"; res.Stdout != want {
		t.Errorf("remove set: stdout = %q, want %q", res.Stdout, want)
	}
}

// TestMemoryLimitExceededEndsPod checks that an app killed for going over
// its memory limit ends the pod with 137, even with a limit of one byte,
// which the app already exceeds when it starts.
func TestMemoryLimitExceededEndsPod(t *testing.T) {
	d := newDriver(t)
	for _, limit := range []string{"1", "8M"} {
		app := busyboxApp(t, "hungry", "/bin/sh", "-c", `x=$(head -c 30000000 /dev/zero | tr '\0' a); echo survived`)
		app.App.Isolators = types.Isolators{isolator(t, "resource/memory", `{"limit":"`+limit+`"}`)}
		res := run(t, d, []stage0.App{app}, nil)
		if res.ExitCode != 137 || res.Statuses["hungry"] != "137" {
			t.Errorf("limit %s: exit status %d, rkt/status %q, want 137 for both; stdout %q, stderr:\n%s",
				limit, res.ExitCode, res.Statuses["hungry"], res.Stdout, res.Stderr)
		}
	}
}
