package boot

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// journalOptions mounts the journal share. journald maps its files with
// writable shared mappings, which 9p in Linux 6.1 supports only with
// cache=mmap or cache=loose. cache=mmap uses the page cache only for the
// mappings, so plain reads and writes reach the host at once.
const journalOptions = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"

// mountJournal mounts the journal share on journald's persistent folder,
// GuestJournalDir/<machine id>. The read-only root has only
// GuestJournalDir, so a small tmpfs there holds the mount point.
func mountJournal(pod *guestconfig.Pod) error {
	machineID := guestconfig.MachineID(pod.UUID)
	if _, err := hex.DecodeString(machineID); err != nil || len(machineID) != 32 {
		return fmt.Errorf("invalid machine id %q from pod UUID %q", machineID, pod.UUID)
	}
	if err := doMount(mount{"tmpfs", guestconfig.GuestJournalDir, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0755,size=64k"}); err != nil {
		return err
	}
	dir := filepath.Join(guestconfig.GuestJournalDir, machineID)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := doMount(mount{guestconfig.JournalTag, dir, "9p", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, journalOptions}); err != nil {
		return err
	}
	// The journal share is mounted before journald starts, so journald may
	// write to it at once instead of to guest RAM first, which is what
	// journald does when it finds this file of systemd 252. Otherwise
	// every pod's end would wait for the copy from RAM to the share.
	if err := os.MkdirAll(filepath.Dir(journalFlushedFlag), 0o755); err != nil {
		return err
	}
	return os.WriteFile(journalFlushedFlag, nil, 0o644)
}

// journalFlushedFlag is the file by which journald learns that its
// journal has moved to persistent storage, which `journalctl --flush`
// creates on a normal system.
const journalFlushedFlag = "/run/systemd/journal/flushed"
