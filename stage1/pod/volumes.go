package pod

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/inroot"
	"github.com/stage1-vm/stage1-vm/stage1/volume"
)

// EmptyVolumesDir holds the folders of empty volumes, relative to the pod
// directory, where rkt's default stage1 keeps them too. They go with the
// pod directory at gc.
const EmptyVolumesDir = "stage1/rootfs/shared-volumes"

// VolumeShareDir is the folder of the volume share, relative to the pod
// directory.
const VolumeShareDir = RuntimeDir + "/volumes"

// Implicit empty volumes, made for mount points that no volume satisfies,
// get the defaults of rkt's default stage1.
const (
	implicitMode = "0755"
	implicitUID  = 0
	implicitGID  = 0
)

// podVolume is a volume as the host prepares it.
type podVolume struct {
	types.Volume
	// source is the host path the views show.
	source string
	file   bool
}

// emptyVolume is an empty volume's checked mode and owner.
type emptyVolume struct {
	mode, uid, gid uint32
}

// volumePlan collects the mounts of every app and the views they need.
type volumePlan struct {
	podDir  string
	volumes map[string]*podVolume
	views   map[string]volume.View
	// empty lists the empty volumes to create, by name.
	empty map[string]emptyVolume
	// configFiles are files for the config share, by their path there.
	configFiles map[string][]byte
}

// resolveMounts returns the mounts of every app, in the order the guest
// makes them, and the views and empty volumes the host prepares. It follows
// rkt's rules: the app's mounts first; then each mount point of the image
// that no mount covers, satisfied by the volume of the same name or by an
// implicit empty volume named <app>-<mount point>. A mount is read-only
// when the volume sets readOnly, or else when the image's mount point of
// that name does.
func resolveMounts(podDir string, pm *schema.PodManifest) (map[string][]guestconfig.Mount, *volumePlan, error) {
	plan := &volumePlan{
		podDir:  podDir,
		volumes: map[string]*podVolume{},
		views:   map[string]volume.View{},
		empty:   map[string]emptyVolume{},
	}
	for _, v := range pm.Volumes {
		if _, dup := plan.volumes[v.Name.String()]; dup {
			return nil, nil, fmt.Errorf("volume %q appears twice in the pod manifest", v.Name)
		}
		plan.volumes[v.Name.String()] = &podVolume{Volume: v}
	}

	mounts := map[string][]guestconfig.Mount{}
	for _, ra := range pm.Apps {
		name := ra.Name.String()
		var mountPoints []types.MountPoint
		if ra.App != nil {
			mountPoints = ra.App.MountPoints
		}
		covered := map[string]bool{}
		var list []guestconfig.Mount
		for _, m := range ra.Mounts {
			vol, err := plan.volumeOf(m)
			if err != nil {
				return nil, nil, fmt.Errorf("app %s: mount at %s: %w", name, m.Path, err)
			}
			readOnly := false
			for _, mp := range mountPoints {
				if mp.Name == m.Volume {
					readOnly = mp.ReadOnly
					break
				}
			}
			gm, err := plan.mount(vol, m.Path, readOnly)
			if err != nil {
				return nil, nil, fmt.Errorf("app %s: mount of volume %s at %q: %w", name, vol.Name, m.Path, err)
			}
			covered[m.Path] = true
			list = append(list, gm)
		}
		for _, mp := range mountPoints {
			if covered[mp.Path] {
				continue
			}
			vol, ok := plan.volumes[mp.Name.String()]
			if !ok {
				implicitName, err := types.NewACName(name + "-" + mp.Name.String())
				if err != nil {
					return nil, nil, fmt.Errorf("app %s: mount point %s: implicit volume name: %w", name, mp.Name, err)
				}
				mode, uid, gid := implicitMode, implicitUID, implicitGID
				vol = &podVolume{Volume: types.Volume{Name: *implicitName, Kind: "empty", Mode: &mode, UID: &uid, GID: &gid}}
				plan.volumes[implicitName.String()] = vol
			}
			gm, err := plan.mount(vol, mp.Path, mp.ReadOnly)
			if err != nil {
				return nil, nil, fmt.Errorf("app %s: mount point %s at %q: %w", name, mp.Name, mp.Path, err)
			}
			list = append(list, gm)
		}
		// A mount inside another one is made after it.
		sort.SliceStable(list, func(i, j int) bool { return depth(list[i].Target) < depth(list[j].Target) })
		if len(list) > 0 {
			mounts[name] = list
		}
	}
	return mounts, plan, nil
}

// volumeOf returns the volume a mount names, or the volume embedded in it.
func (p *volumePlan) volumeOf(m schema.Mount) (*podVolume, error) {
	if m.AppVolume != nil {
		name := m.AppVolume.Name.String()
		if _, dup := p.volumes[name]; dup {
			return nil, fmt.Errorf("the mount's own volume %q has the name of a pod volume", name)
		}
		v := &podVolume{Volume: *m.AppVolume}
		p.volumes[name] = v
		return v, nil
	}
	v, ok := p.volumes[m.Volume.String()]
	if !ok {
		return nil, fmt.Errorf("no volume %q in the pod manifest; add it with --volume", m.Volume)
	}
	return v, nil
}

// mount checks a mount of vol at target and records the view it needs.
func (p *volumePlan) mount(vol *podVolume, target string, readOnly bool) (guestconfig.Mount, error) {
	if vol.ReadOnly != nil {
		readOnly = *vol.ReadOnly
	}
	if !path.IsAbs(target) || strings.ContainsRune(target, 0) {
		return guestconfig.Mount{}, fmt.Errorf("the target must be an absolute path")
	}
	target = path.Clean(target)
	if target == "/" {
		return guestconfig.Mount{}, fmt.Errorf("a volume cannot be mounted on the app's root")
	}
	if err := p.locate(vol); err != nil {
		return guestconfig.Mount{}, err
	}
	view := volume.View{
		Name:      vol.Name.String(),
		Source:    vol.source,
		ReadOnly:  readOnly,
		Recursive: vol.Recursive == nil || *vol.Recursive,
		File:      vol.file,
	}
	p.views[view.Path()] = view
	return guestconfig.Mount{View: view.Path(), Target: target, ReadOnly: readOnly, File: vol.file}, nil
}

// locate finds the host source of a volume once, and checks it.
func (p *volumePlan) locate(vol *podVolume) error {
	if vol.source != "" {
		return nil
	}
	switch vol.Kind {
	case "host":
		info, err := os.Stat(vol.Source)
		if err != nil {
			return fmt.Errorf("host source of volume %s: %w; create it or change the volume's source", vol.Name, err)
		}
		if !info.IsDir() && !info.Mode().IsRegular() {
			return fmt.Errorf("host source %s of volume %s is neither a folder nor a regular file (mode %s)", vol.Source, vol.Name, info.Mode())
		}
		vol.source, vol.file = vol.Source, !info.IsDir()
	case "empty":
		if vol.Mode == nil || vol.UID == nil || vol.GID == nil {
			return fmt.Errorf("empty volume %s lacks a mode, uid or gid", vol.Name)
		}
		mode, err := volume.ParseMode(*vol.Mode)
		if err != nil {
			return fmt.Errorf("empty volume %s: %w", vol.Name, err)
		}
		for _, id := range []int{*vol.UID, *vol.GID} {
			if id < 0 || int64(id) >= 1<<32-1 {
				return fmt.Errorf("empty volume %s: owner id %d is out of range", vol.Name, id)
			}
		}
		vol.source = filepath.Join(p.podDir, EmptyVolumesDir, vol.Name.String())
		p.empty[vol.Name.String()] = emptyVolume{mode: mode, uid: uint32(*vol.UID), gid: uint32(*vol.GID)}
	default:
		return fmt.Errorf("volume %s has kind %q; use \"host\" or \"empty\"", vol.Name, vol.Kind)
	}
	return nil
}

// Views returns the views in a stable order.
func (p *volumePlan) Views() []volume.View {
	var views []volume.View
	for _, v := range p.views {
		views = append(views, v)
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Path() < views[j].Path() })
	return views
}

func depth(p string) int {
	return strings.Count(path.Clean(p), "/")
}

// Volumes is the host's part of a pod's volumes.
type Volumes struct {
	plan *volumePlan
}

// Share returns the volume share, or nil when no app mounts a volume.
func (v *Volumes) Share() *volume.Share {
	if len(v.plan.views) == 0 {
		return nil
	}
	return &volume.Share{Dir: filepath.Join(v.plan.podDir, VolumeShareDir), Views: v.plan.Views()}
}

// Prepare creates the empty volumes, the share's mount points, the files
// of the config share that apps mount, and each mount's target in its app's
// rootfs. The targets are created on the host, inside the rootfs, so that a
// read-only rootfs can have them too.
func (v *Volumes) Prepare(cfg *guestconfig.Pod) error {
	configDir := filepath.Join(v.plan.podDir, RuntimeDir, "config")
	for _, name := range sortedKeys(v.plan.configFiles) {
		path := filepath.Join(configDir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, v.plan.configFiles[name], 0o644); err != nil {
			return fmt.Errorf("write %s for the guest: %w", name, err)
		}
	}
	for _, name := range sortedKeys(v.plan.empty) {
		vol := v.plan.empty[name]
		dir := filepath.Join(v.plan.podDir, EmptyVolumesDir, name)
		if err := volume.CreateEmpty(dir, vol.mode, vol.uid, vol.gid); err != nil {
			return fmt.Errorf("empty volume %s: %w", name, err)
		}
	}
	if share := v.Share(); share != nil {
		if err := share.Prepare(); err != nil {
			return err
		}
	}
	for _, app := range cfg.Apps {
		if len(app.Mounts) == 0 {
			continue
		}
		rootfs := filepath.Join(v.plan.podDir, AppRootfs(app.Name))
		root, err := os.Open(rootfs)
		if err != nil {
			return fmt.Errorf("app %s: open rootfs: %w", app.Name, err)
		}
		for _, m := range app.Mounts {
			kernelErr := fmt.Errorf("app %s: mount target %s is under /proc or /sys, where the guest mounts kernel file systems; mount the volume elsewhere", app.Name, m.Target)
			if underKernelDir(m.Target) {
				root.Close()
				return kernelErr
			}
			f, err := inroot.MakeTarget(root, m.Target, !m.File)
			if err != nil {
				root.Close()
				return fmt.Errorf("app %s: %w", app.Name, err)
			}
			bad, err := resolvedUnderKernelDir(root, f)
			f.Close()
			if err != nil || bad {
				root.Close()
				if err != nil {
					return fmt.Errorf("app %s: resolve mount target %s: %w", app.Name, m.Target, err)
				}
				return kernelErr
			}
		}
		root.Close()
	}
	return nil
}

// kernelDirs are the top folders of an app's rootfs where the guest mounts
// its proc and sysfs: a volume cannot be mounted there.
var kernelDirs = []string{"proc", "sys"}

// underKernelDir reports whether p, relative to an app's rootfs, is under
// one of kernelDirs.
func underKernelDir(p string) bool {
	first := strings.SplitN(strings.TrimPrefix(path.Clean("/"+p), "/"), "/", 2)[0]
	for _, d := range kernelDirs {
		if first == d {
			return true
		}
	}
	return false
}

// resolvedUnderKernelDir reports whether the opened target f lies under
// /proc or /sys of the rootfs root, which the image's symlinks can lead to.
func resolvedUnderKernelDir(root, f *os.File) (bool, error) {
	rootPath, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", root.Fd()))
	if err != nil {
		return false, err
	}
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return false, err
	}
	rel, ok := strings.CutPrefix(real, rootPath)
	return ok && strings.HasPrefix(rel, "/") && underKernelDir(rel), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
