package qemu

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RunningPID returns the pid of the running QEMU of a pod from the pid file
// QEMU wrote. The file alone is not trusted: the process must carry the
// pod's UUID on its command line, so that a reused pid is never taken for
// the pod's QEMU.
func RunningPID(pidFile, uuid string) (int, error) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("read QEMU's pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("invalid QEMU pid file %s: %q", pidFile, data)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("\x00-uuid\x00"+uuid+"\x00")) {
		return 0, fmt.Errorf("the QEMU of pod %s (pid %d) is not running", uuid, pid)
	}
	return pid, nil
}
