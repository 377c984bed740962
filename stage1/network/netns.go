package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// NetNSDir is the folder of named network namespaces, bind-mounted files
// as iproute2's `ip netns` and rkt keep them.
const NetNSDir = "/var/run/netns"

// NetNSPath returns the path of a pod's network namespace.
func NetNSPath(uuid string) string {
	return filepath.Join(NetNSDir, "stage1-vm-"+uuid)
}

// createNetNS creates a network namespace and bind-mounts it at path.
func createNetNS(path string) error {
	if err := prepareNetNSDir(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create network namespace file: %w", err)
	}
	f.Close()

	done := make(chan error, 1)
	go func() {
		// The thread switches namespace and is never unlocked, so Go ends
		// it with this goroutine and no other goroutine runs in the new
		// namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("unshare the network namespace: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			done <- fmt.Errorf("bind-mount the network namespace on %s: %w", path, err)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// prepareNetNSDir makes NetNSDir a shared mount point, as `ip netns add`
// does, so that unmounting a namespace there also unmounts the copies that
// other mount namespaces made, and the namespace is freed.
func prepareNetNSDir() error {
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", NetNSDir, err)
	}
	err := unix.Mount("", NetNSDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s a shared mount: %w", NetNSDir, err)
	}
	// EINVAL: not a mount point yet.
	if err := unix.Mount(NetNSDir, NetNSDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s on itself: %w", NetNSDir, err)
	}
	if err := unix.Mount("", NetNSDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", NetNSDir, err)
	}
	return nil
}

// removeNetNS unmounts and removes a namespace created by createNetNS. A
// missing namespace is not an error.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", path, err)
	}
	return nil
}
