package pod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// volumeManifest returns a pod manifest with one app "a" whose app section
// and pod-level fields are the given JSON fragments.
func volumeManifest(appExtra, runtimeExtra, volumes string) string {
	id := `"image":{"id":"sha512-` + strings.Repeat("0", 64) + `"}`
	return `{"acKind":"PodManifest","acVersion":"1.30.0","apps":[{"name":"a",` + id +
		`,"app":{"exec":["/bin/sh"],"user":"0","group":"0"` + appExtra + `}` + runtimeExtra + `}],"volumes":[` + volumes + `]}`
}

func TestResolveMounts(t *testing.T) {
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "file.conf")
	if err := os.WriteFile(hostFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostVol := func(name string, extra string) string {
		return `{"name":"` + name + `","kind":"host","source":"` + hostDir + `"` + extra + `}`
	}
	cases := []struct {
		name                      string
		appExtra, mounts, volumes string
		want                      []guestconfig.Mount
		wantViews                 []string
	}{
		{
			name:      "mount without mount point",
			mounts:    `,"mounts":[{"volume":"data","path":"/data"}]`,
			volumes:   hostVol("data", ""),
			want:      []guestconfig.Mount{{View: "rw/data", Target: "/data"}},
			wantViews: []string{"rw/data"},
		},
		{
			name:      "read-only volume wins over the mount point",
			appExtra:  `,"mountPoints":[{"name":"data","path":"/data","readOnly":false}]`,
			mounts:    `,"mounts":[{"volume":"data","path":"/data"}]`,
			volumes:   hostVol("data", `,"readOnly":true`),
			want:      []guestconfig.Mount{{View: "ro/data", Target: "/data", ReadOnly: true}},
			wantViews: []string{"ro/data"},
		},
		{
			name:      "read-only mount point when the volume does not say",
			appExtra:  `,"mountPoints":[{"name":"data","path":"/srv","readOnly":true}]`,
			volumes:   hostVol("data", ""),
			want:      []guestconfig.Mount{{View: "ro/data", Target: "/srv", ReadOnly: true}},
			wantViews: []string{"ro/data"},
		},
		{
			name:      "implicit empty volume",
			appExtra:  `,"mountPoints":[{"name":"cache","path":"/var/cache"}]`,
			want:      []guestconfig.Mount{{View: "rw/a-cache", Target: "/var/cache"}},
			wantViews: []string{"rw/a-cache"},
		},
		{
			name:      "file volume, parents first",
			mounts:    `,"mounts":[{"volume":"conf","path":"/etc/app/x.conf"},{"volume":"data","path":"/etc"}]`,
			volumes:   hostVol("data", "") + `,{"name":"conf","kind":"host","source":"` + hostFile + `"}`,
			want:      []guestconfig.Mount{{View: "rw/data", Target: "/etc"}, {View: "rw/conf", Target: "/etc/app/x.conf", File: true}},
			wantViews: []string{"rw/conf", "rw/data"},
		},
		{
			name:      "target cleaned",
			mounts:    `,"mounts":[{"volume":"data","path":"/a/../b/"}]`,
			volumes:   hostVol("data", ""),
			want:      []guestconfig.Mount{{View: "rw/data", Target: "/b"}},
			wantViews: []string{"rw/data"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pm, err := ParseManifest([]byte(volumeManifest(c.appExtra, c.mounts, c.volumes)))
			if err != nil {
				t.Fatal(err)
			}
			mounts, plan, err := resolveMounts(t.TempDir(), pm)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(mounts["a"], c.want) {
				t.Errorf("mounts = %+v, want %+v", mounts["a"], c.want)
			}
			var views []string
			for _, v := range plan.Views() {
				views = append(views, v.Path())
			}
			if !reflect.DeepEqual(views, c.wantViews) {
				t.Errorf("views = %v, want %v", views, c.wantViews)
			}
		})
	}
}

func TestResolveMountsRejects(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		name, appExtra, mounts, volumes, want string
	}{
		{"missing host source", "", `,"mounts":[{"volume":"data","path":"/data"}]`,
			`{"name":"data","kind":"host","source":"` + missing + `"}`, missing},
		{"unknown volume", "", `,"mounts":[{"volume":"nope","path":"/data"}]`, "", `no volume "nope"`},
		{"relative target", "", `,"mounts":[{"volume":"data","path":"data"}]`,
			`{"name":"data","kind":"empty"}`, `"data": the target must be an absolute path`},
		{"root target", "", `,"mounts":[{"volume":"data","path":"/"}]`,
			`{"name":"data","kind":"empty"}`, "app's root"},
		{"bad mode", "", `,"mounts":[{"volume":"data","path":"/d"}]`,
			`{"name":"data","kind":"empty","mode":"9x"}`, `invalid mode "9x"`},
		{"device source", "", `,"mounts":[{"volume":"data","path":"/d"}]`,
			`{"name":"data","kind":"host","source":"/dev/null"}`, "neither a folder nor a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pm, err := ParseManifest([]byte(volumeManifest(c.appExtra, c.mounts, c.volumes)))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = resolveMounts(t.TempDir(), pm)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestVolumesPrepare(t *testing.T) {
	podDir := makePodDir(t, "a")
	rootfs := filepath.Join(podDir, AppRootfs("a"))
	outside := t.TempDir()
	// The image's /var/lib runs out of the rootfs through an absolute link.
	if err := os.MkdirAll(filepath.Join(rootfs, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(rootfs, "var/lib")); err != nil {
		t.Fatal(err)
	}
	pm, err := ParseManifest([]byte(volumeManifest("", `,"mounts":[{"volume":"scratch","path":"/var/lib/scratch"}]`,
		`{"name":"scratch","kind":"empty","mode":"1770","uid":1000,"gid":2000}`)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, vols, err := GuestConfig(podDir, pm, Options{UUID: testUUID, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 0 {
		t.Skip("creating an empty volume with an owner needs root")
	}
	if err := vols.Prepare(cfg); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(podDir, EmptyVolumesDir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode() & (os.ModePerm | os.ModeSticky); got != os.ModeSticky|0o770 {
		t.Errorf("empty volume mode = %v, want sticky 0770", got)
	}
	if _, err := os.Stat(filepath.Join(rootfs, outside, "scratch")); err != nil {
		t.Errorf("mount target not created inside the rootfs: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the mount target was created outside the rootfs: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(podDir, VolumeShareDir, "rw/scratch")); err != nil {
		t.Errorf("share mount point missing: %v", err)
	}
}

func TestVolumesPrepareRejectsKernelTargets(t *testing.T) {
	for name, target := range map[string]string{
		"proc":         "/proc/foo",
		"sys":          "/sys/x",
		"through link": "/viaproc/x",
	} {
		t.Run(name, func(t *testing.T) {
			podDir := makePodDir(t, "a")
			rootfs := filepath.Join(podDir, AppRootfs("a"))
			if err := os.Symlink("/proc/self/root", filepath.Join(rootfs, "viaproc")); err != nil {
				t.Fatal(err)
			}
			pm, err := ParseManifest([]byte(volumeManifest("", `,"mounts":[{"volume":"v","path":"`+target+`"}]`, `{"name":"v","kind":"empty"}`)))
			if err != nil {
				t.Fatal(err)
			}
			cfg, vols, err := GuestConfig(podDir, pm, Options{UUID: testUUID, Hostname: "h"})
			if err != nil {
				t.Fatal(err)
			}
			err = vols.Prepare(cfg)
			if err == nil || !strings.Contains(err.Error(), "under /proc or /sys") {
				t.Errorf("Prepare error = %v, want the target under /proc or /sys rejected", err)
			}
		})
	}
}
