package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// summary is the median, minimum and maximum of a sample.
type summary struct {
	Median, Min, Max float64
}

func summarize(values []float64) summary {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	n := len(sorted)
	if n == 0 {
		return summary{}
	}
	median := sorted[n/2]
	if n%2 == 0 {
		median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return summary{Median: median, Min: sorted[0], Max: sorted[n-1]}
}

func seconds(durations []time.Duration) []float64 {
	values := make([]float64, len(durations))
	for i, d := range durations {
		values[i] = d.Seconds()
	}
	return values
}

func mebibytes(kib []uint64) []float64 {
	values := make([]float64, len(kib))
	for i, k := range kib {
		values[i] = float64(k) / 1024
	}
	return values
}

// machine describes the host that ran the benchmark.
type machine struct {
	CPUs        int
	CPUModel    string
	MemoryGiB   float64
	HostKernel  string
	QEMU        string
	GuestKernel string
	TSCkHz      uint64
	// LoadBefore and LoadAfter are the 1, 5 and 15 minute load averages.
	LoadBefore   string
	LoadAfter    string
	Date         string
	Command      string
	Runs         int
	ConcurrentOf int
}

// describeHost fills the fields of machine that come from the host.
func describeHost(m *machine) {
	// runtime.NumCPU counts the CPUs in the affinity mask, as nproc does.
	m.CPUs = runtime.NumCPU()
	m.CPUModel = "unknown"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if key, value, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(key) == "model name" {
				m.CPUModel = strings.TrimSpace(value)
				break
			}
		}
		f.Close()
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err == nil {
		m.MemoryGiB = float64(info.Totalram) * float64(info.Unit) / (1 << 30)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		m.HostKernel = unix.ByteSliceToString(uts.Release[:])
	}
}

// loadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	fields := strings.Fields(string(data))
	if err != nil || len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

// results are the samples of every case.
type results struct {
	Floor      []floorRun
	Pods       []podRun
	Concurrent []concurrentRun
	Sessions   []sessionRun
	Image      imageSizes
	// BusyIterations counts the iterations that began while a QEMU that
	// this program did not start was running.
	BusyIterations int
}

// row is one line of the results table.
type row struct {
	Name  string
	Unit  string
	Stats summary
}

// table contains the summaries of every measurement, by name for the ratios.
type table struct {
	floorTime, floorPeak                           row
	podQEMU, podFirst, podExit, podReturn, podPeak row
	concurrentPrinted, concurrentExited            row
	enter, stop, forceStop                         row
}

func (r *results) table(concurrentOf int) table {
	var floorTime, podQEMU, podFirst, podExit, podReturn, concPrinted, concExited []time.Duration
	var floorPeak, podPeak []uint64
	for _, f := range r.Floor {
		floorTime = append(floorTime, f.Elapsed)
		floorPeak = append(floorPeak, f.PeakKiB)
	}
	for _, p := range r.Pods {
		podQEMU = append(podQEMU, p.QEMUFound)
		podFirst = append(podFirst, p.FirstOutput)
		podExit = append(podExit, p.EntrypointExit)
		podReturn = append(podReturn, p.Returned)
		podPeak = append(podPeak, p.QEMUPeakKiB)
	}
	for _, c := range r.Concurrent {
		concPrinted = append(concPrinted, c.AllPrinted)
		concExited = append(concExited, c.AllExited)
	}
	var enter, stop, forceStop []time.Duration
	for _, s := range r.Sessions {
		enter = append(enter, s.Enter)
		stop = append(stop, s.Stop)
		forceStop = append(forceStop, s.ForceStop)
	}
	return table{
		floorTime: row{"Floor: QEMU start to exit", "s", summarize(seconds(floorTime))},
		floorPeak: row{"Floor: QEMU peak RSS (wait4)", "MiB", summarize(mebibytes(floorPeak))},
		podQEMU: row{fmt.Sprintf("Hello pod: QEMU process found (polled every %d ms)", pollInterval.Milliseconds()),
			"s", summarize(seconds(podQEMU))},
		podFirst:  row{"Hello pod: first byte on stdout", "s", summarize(seconds(podFirst))},
		podExit:   row{"Hello pod: run entrypoint exited", "s", summarize(seconds(podExit))},
		podReturn: row{"Hello pod: driver's Run returned (after gc and unmounts)", "s", summarize(seconds(podReturn))},
		podPeak:   row{"Hello pod: QEMU peak RSS (VmHWM, polled)", "MiB", summarize(mebibytes(podPeak))},
		concurrentPrinted: row{fmt.Sprintf("%d hello pods at once: last first byte on stdout", concurrentOf),
			"s", summarize(seconds(concPrinted))},
		concurrentExited: row{fmt.Sprintf("%d hello pods at once: last run entrypoint exited", concurrentOf),
			"s", summarize(seconds(concExited))},
		enter:     row{"Enter: `true` in a running pod, enter entrypoint start to exit", "s", summarize(seconds(enter))},
		stop:      row{"Stop: stop entrypoint start to run entrypoint exit (app exits on SIGTERM)", "s", summarize(seconds(stop))},
		forceStop: row{"Stop --force: stop entrypoint start to run entrypoint exit", "s", summarize(seconds(forceStop))},
	}
}

// pollingError returns the largest amount in MiB by which polling VmHWM
// read less than wait4's maximum RSS for the floor's QEMU.
func (r *results) pollingError() float64 {
	var worst float64
	for _, f := range r.Floor {
		worst = max(worst, (float64(f.PeakKiB)-float64(f.PolledPeakKiB))/1024)
	}
	return worst
}

func formatValue(v float64, unit string) string {
	if unit == "s" {
		return fmt.Sprintf("%.2f s", v)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

func formatMiB(bytes int64) string {
	return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20))
}

// writeTables writes the results, ratio and image size tables in Markdown.
func writeTables(w io.Writer, r *results, m *machine) {
	t := r.table(m.ConcurrentOf)
	rows := []row{t.floorTime, t.floorPeak, t.podQEMU, t.podFirst, t.podExit, t.podReturn, t.podPeak}
	if len(r.Concurrent) > 0 {
		rows = append(rows, t.concurrentPrinted, t.concurrentExited)
	}
	if len(r.Sessions) > 0 {
		rows = append(rows, t.enter, t.stop, t.forceStop)
	}
	fmt.Fprintf(w, "| Measurement (%d runs) | Median | Min | Max |\n|---|---|---|---|\n", m.Runs)
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", row.Name,
			formatValue(row.Stats.Median, row.Unit), formatValue(row.Stats.Min, row.Unit), formatValue(row.Stats.Max, row.Unit))
	}

	floorTime, floorPeak := t.floorTime.Stats.Median, t.floorPeak.Stats.Median
	fmt.Fprintf(w, "\n| Ratio of medians, hello pod / floor | |\n|---|---|\n")
	fmt.Fprintf(w, "| first byte on stdout / floor boot | %.1f× |\n", t.podFirst.Stats.Median/floorTime)
	fmt.Fprintf(w, "| run entrypoint exited / floor boot | %.1f× |\n", t.podExit.Stats.Median/floorTime)
	fmt.Fprintf(w, "| QEMU peak RSS / floor QEMU peak RSS | %.1f× |\n", t.podPeak.Stats.Median/floorPeak)

	fmt.Fprintf(w, "\n| Image | Size |\n|---|---|\n")
	fmt.Fprintf(w, "| stage1-vm.aci file (gzip-compressed tar) | %s |\n", formatMiB(r.Image.FileBytes))
	fmt.Fprintf(w, "| unpacked, sum of regular file sizes | %s |\n", formatMiB(r.Image.UnpackedBytes))
	for _, p := range r.Image.Parts {
		fmt.Fprintf(w, "| of which %s | %s |\n", p.Name, formatMiB(p.Bytes))
	}
}
