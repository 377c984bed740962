package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// countQEMUs returns the number of running processes whose argv contains
// qemu-system-x86_64.
func countQEMUs() int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, d := range dirs {
		if pid, err := strconv.Atoi(d.Name()); err == nil && argvContains(pid, "qemu-system-x86_64") {
			n++
		}
	}
	return n
}

func readPPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in brackets can contain spaces and brackets, so the
	// fields are counted from the last ')': state, then the parent's pid.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("invalid /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 2 {
		return 0, fmt.Errorf("invalid /proc/%d/stat: too few fields", pid)
	}
	return strconv.Atoi(fields[1])
}

func readArgv(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

func argvZeroIs(pid int, suffix string) bool {
	argv := readArgv(pid)
	return len(argv) > 0 && strings.HasSuffix(argv[0], suffix)
}

func argvContains(pid int, substr string) bool {
	for _, arg := range readArgv(pid) {
		if strings.Contains(arg, substr) {
			return true
		}
	}
	return false
}

// readVmHWM returns a process's peak resident set size in KiB.
func readVmHWM(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if value, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
