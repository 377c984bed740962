// Command build writes the stage1-vm ACI: the host binary and its
// entrypoint links, QEMU with its library closure and firmware, the guest
// kernel, the guest system (systemd with its closure and the guest binary),
// and the image manifest.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

type options struct {
	out, stage                 string
	hostBinary, guestBinary    string
	kernel, version            string
	qemuBinary, qemuModuleDir  string
	qemuFirmwareDir, systemd   string
	manifestTemplate, unitsDir string
	cniPluginDir               string
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "out/stage1-vm.aci", "ACI file to write")
	flag.StringVar(&o.stage, "stage", "out/aci", "staging folder for the image tree (emptied first)")
	flag.StringVar(&o.hostBinary, "host-binary", "out/stage1-vm", "static host-side binary")
	flag.StringVar(&o.guestBinary, "guest-binary", "out/stage1-vm-init", "static guest-side binary")
	flag.StringVar(&o.kernel, "kernel", "out/bzImage", "guest kernel bzImage")
	flag.StringVar(&o.version, "version", "0.1.0", "image version label")
	flag.StringVar(&o.qemuBinary, "qemu", "/usr/bin/qemu-system-x86_64", "QEMU binary to bundle")
	flag.StringVar(&o.qemuModuleDir, "qemu-modules", "/usr/lib/x86_64-linux-gnu/qemu", "QEMU module folder")
	flag.StringVar(&o.qemuFirmwareDir, "qemu-firmware", "/usr/share/qemu", "QEMU firmware folder")
	flag.StringVar(&o.systemd, "systemd", "/lib/systemd/systemd", "systemd binary for the guest")
	flag.StringVar(&o.manifestTemplate, "manifest", "aci-manifest/manifest.json.in", "image manifest template")
	flag.StringVar(&o.unitsDir, "units", "init/units", "static systemd units of the guest system")
	flag.StringVar(&o.cniPluginDir, "cni-plugins", "out/cni", "folder of the CNI plugin binaries to bundle")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := build(o, log); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n", err)
		os.Exit(1)
	}
}

func build(o options, log *slog.Logger) error {
	if err := os.RemoveAll(o.stage); err != nil {
		return err
	}
	rootfs := filepath.Join(o.stage, "rootfs")
	host := filepath.Join(rootfs, "stage1-vm/host")
	guest := filepath.Join(rootfs, "stage1-vm/guest")

	steps := []struct {
		name string
		fn   func() error
	}{
		{"host binary", func() error { return addHost(o, host) }},
		{"QEMU bundle", func() error { return addQEMU(o, filepath.Join(host, "qemu")) }},
		// rkt's default stage1 keeps its plugins in this folder, and the
		// run entrypoint looks for them there.
		{"CNI plugins", func() error { return addPlugins(o.cniPluginDir, filepath.Join(rootfs, "usr/lib/rkt/plugins/net")) }},
		{"kernel", func() error { return copyFile(o.kernel, filepath.Join(host, "kernel/bzImage"), 0o644) }},
		{"guest system", func() error { return addGuest(o, guest) }},
		{"rkt folders", func() error { return os.MkdirAll(filepath.Join(rootfs, "rkt/status"), 0o755) }},
		{"manifest", func() error { return writeManifest(o, filepath.Join(o.stage, "manifest")) }},
		{"ACI", func() error { return writeACI(o.stage, o.out) }},
	}
	for _, s := range steps {
		log.Info("adding " + s.name)
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// addHost installs the host binary and a link for each entrypoint.
func addHost(o options, host string) error {
	if err := copyFile(o.hostBinary, filepath.Join(host, "bin/stage1-vm"), 0o755); err != nil {
		return err
	}
	for _, name := range []string{"run", "enter", "attach", "gc", "stop", "app-add", "app-start", "app-stop", "app-rm"} {
		if err := os.Symlink("bin/stage1-vm", filepath.Join(host, name)); err != nil {
			return err
		}
	}
	return nil
}

// addPlugins copies every CNI plugin binary of src into dst.
func addPlugins(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("no CNI plugins in %s", src)
	}
	for _, e := range entries {
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// addQEMU copies QEMU, its TCG module, their libraries, the loader and the
// firmware of the microvm machine into dir, in the layout qemu.Bundle reads.
func addQEMU(o options, dir string) error {
	tcg := filepath.Join(o.qemuModuleDir, "accel-tcg-x86_64.so")
	if err := copyFile(o.qemuBinary, filepath.Join(dir, "bin/qemu-system-x86_64"), 0o755); err != nil {
		return err
	}
	if err := copyFile(tcg, filepath.Join(dir, "lib/qemu/accel-tcg-x86_64.so"), 0o644); err != nil {
		return err
	}
	libs, err := libraryClosure(o.qemuBinary, tcg)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if strings.Contains(filepath.Base(lib), "ld-linux") {
			if err := copyFile(lib, filepath.Join(dir, "ld.so"), 0o755); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(lib, filepath.Join(dir, "lib", filepath.Base(lib)), 0o644); err != nil {
			return err
		}
	}
	for _, fw := range []string{"bios-microvm.bin", "qboot.rom", "linuxboot_dma.bin"} {
		if err := copyFile(filepath.Join(o.qemuFirmwareDir, fw), filepath.Join(dir, "share/qemu", fw), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// addGuest builds the guest system root: merged-/usr links, systemd and its
// libraries at their real paths, the guest binary, the static units and a
// minimal /etc. The guest mounts it read-only.
func addGuest(o options, guest string) error {
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "proc", "sys", "dev", "run", "tmp", "etc", "root", "var",
		"stage1-vm/bin", "stage1-vm/config", "stage1-vm/apps", "stage1-vm/app-share", "stage1-vm/volumes", "usr/lib/systemd/system", "etc/systemd", "var/log/journal"} {
		if err := os.MkdirAll(filepath.Join(guest, d), 0o755); err != nil {
			return err
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(guest, l)); err != nil {
			return err
		}
	}
	if err := os.Symlink("../run", filepath.Join(guest, "var/run")); err != nil {
		return err
	}

	shutdown := filepath.Join(filepath.Dir(o.systemd), "systemd-shutdown")
	journald := filepath.Join(filepath.Dir(o.systemd), "systemd-journald")
	// systemd stops its mount units with umount at shutdown. The agent
	// adds, starts and stops the units of a mutable pod's apps with
	// systemctl.
	binaries := []string{o.systemd, shutdown, journald, "/bin/mount", "/bin/umount", "/bin/systemctl"}
	for _, b := range binaries {
		if err := copyResolved(b, guest, 0o755); err != nil {
			return err
		}
	}
	libs, err := libraryClosure(binaries...)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := copyResolved(lib, guest, 0o755); err != nil {
			return err
		}
	}

	if err := copyFile(o.guestBinary, filepath.Join(guest, "stage1-vm/bin/stage1-vm-init"), 0o755); err != nil {
		return err
	}
	units, err := os.ReadDir(o.unitsDir)
	if err != nil {
		return err
	}
	for _, u := range units {
		if err := copyFile(filepath.Join(o.unitsDir, u.Name()), filepath.Join(guest, "usr/lib/systemd/system", u.Name()), 0o644); err != nil {
			return err
		}
	}

	etc := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":      "root:x:0:\n",
		"etc/os-release": "NAME=\"stage1-vm\"\nID=stage1-vm\nPRETTY_NAME=\"stage1-vm guest\"\nVERSION_ID=" + o.version + "\n",
		// systemd bind-mounts the id from systemd.machine_id= over this
		// empty file, as the root is read-only.
		"etc/machine-id": "",
		// The pod's units log to /dev/kmsg, which journald reads, or set
		// their own output. The rest log nowhere rather than each open a
		// stream to journald.
		"etc/systemd/system.conf":   "[Manager]\nDefaultStandardOutput=null\nDefaultStandardError=null\n",
		"etc/systemd/journald.conf": journaldConf,
	}
	for name, content := range etc {
		if err := os.WriteFile(filepath.Join(guest, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// journaldConf is the guest's journald.conf (systemd 252). The journal
// lives on the host's disk in the pod directory, so its size is capped
// per pod. Files of 1 MiB keep what journald allocates ahead small:
// 9p has no fallocate, so the C library emulates it with writes that
// reach the host's disk. journald syncs the share 5 s after it wrote an entry, which is
// when a host reading a running pod's journal sees it. Rate limiting is
// off because every app's output reaches journald through the agent, so
// all apps would share one limit. The agent bounds what it queues instead.
const journaldConf = `[Journal]
Storage=persistent
SystemMaxUse=64M
SystemMaxFileSize=1M
RuntimeMaxUse=4M
SyncIntervalSec=5s
RateLimitIntervalSec=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
`

// copyResolved copies src into root at the path where src's folder really
// is (following the build host's merged-/usr links), keeping src's name.
func copyResolved(src, root string, mode os.FileMode) error {
	dir, err := filepath.EvalSymlinks(filepath.Dir(src))
	if err != nil {
		return err
	}
	return copyFile(src, filepath.Join(root, dir, filepath.Base(src)), mode)
}

// copyFile copies the content of src, following symlinks, to dst.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
