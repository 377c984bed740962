package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/inroot"
)

// Stage1RootfsDir is the stage1 image's rootfs, relative to the pod
// directory.
const Stage1RootfsDir = "stage1/rootfs"

// JournalDir returns the folder, relative to the pod directory, that holds
// the guest journal of pod uuid. rkt's default stage1 keeps its pods'
// journals at the same place, so `journalctl -D
// <pod>/stage1/rootfs/var/log/journal` works for both.
func JournalDir(uuid string) string {
	return filepath.Join(Stage1RootfsDir, guestconfig.GuestJournalDir, guestconfig.MachineID(uuid))
}

// makeJournalDir creates the journal folder of pod uuid inside the stage1
// rootfs of podDir and returns its path. Every component resolves inside
// that rootfs, so a symlink there never leads the creation out of the pod.
// The guest writes the folder's content through the journal share; the
// host never reads it.
func makeJournalDir(podDir, uuid string) (string, error) {
	rootfs := filepath.Join(podDir, Stage1RootfsDir)
	root, err := os.Open(rootfs)
	if err != nil {
		return "", fmt.Errorf("open the stage1 rootfs: %w", err)
	}
	defer root.Close()
	inRoot := filepath.Join(guestconfig.GuestJournalDir, guestconfig.MachineID(uuid))
	dir, err := inroot.MakeTarget(root, inRoot, true)
	if err != nil {
		return "", fmt.Errorf("create the journal folder %s of pod %s: %w", inRoot, uuid, err)
	}
	defer dir.Close()

	// QEMU opens the share by path. The path must name the folder that was
	// created inside the rootfs, not a symlink that leads elsewhere.
	path := filepath.Join(podDir, JournalDir(uuid))
	var created, named unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &created); err != nil {
		return "", fmt.Errorf("stat the journal folder %s: %w", path, err)
	}
	err = unix.Lstat(path, &named)
	if errors.Is(err, unix.ENOENT) || (err == nil && (created.Dev != named.Dev || created.Ino != named.Ino)) {
		return "", fmt.Errorf("the journal folder %s resolves outside the stage1 rootfs through a symlink; remove the symlink", path)
	}
	if err != nil {
		return "", fmt.Errorf("stat the journal folder %s: %w", path, err)
	}
	return path, nil
}
