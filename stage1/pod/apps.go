package pod

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"
	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
	"github.com/stage1-vm/stage1-vm/internal/inroot"
	"github.com/stage1-vm/stage1-vm/stage1/volume"
)

// DefaultPath is the PATH the appc specification gives apps that set none.
const DefaultPath = guestconfig.DefaultPath

// Options are the run flags that shape the guest configuration.
type Options struct {
	UUID     string
	Hostname string
	Debug    bool
	// DisableCapabilities keeps the full bounding set
	// (--disable-capabilities-restriction).
	DisableCapabilities bool
	// DNS is --dns-conf-mode.
	DNS DNSMode
	// DisablePaths is --disable-paths.
	DisablePaths bool
	// DisableSeccomp is --disable-seccomp: apps run without a system call
	// filter.
	DisableSeccomp bool
}

// GuestConfig converts the pod manifest into the guest's configuration and
// checks each app against its rootfs in podDir. Every error names the app
// and the value at fault.
func GuestConfig(podDir string, pm *schema.PodManifest, opts Options) (*guestconfig.Pod, *Volumes, error) {
	if err := ValidateHostname(opts.Hostname); err != nil {
		return nil, nil, err
	}
	if err := checkSupported(pm); err != nil {
		return nil, nil, err
	}
	mounts, plan, err := resolveMounts(podDir, pm)
	if err != nil {
		return nil, nil, err
	}
	if opts.DNS.Resolv == "" {
		opts.DNS.Resolv, opts.DNS.Hosts = "default", "default"
	}
	if plan.configFiles, err = dnsFiles(podDir, opts.DNS, opts.Hostname); err != nil {
		return nil, nil, err
	}
	cfg := &guestconfig.Pod{
		UUID:     opts.UUID,
		Hostname: opts.Hostname,
		Debug:    opts.Debug,

		DisablePaths: opts.DisablePaths,
	}
	for _, ra := range pm.Apps {
		name := ra.Name.String()
		if ra.App == nil {
			return nil, nil, fmt.Errorf("app %s: the pod manifest has no app section; rkt fills it from the image manifest", name)
		}
		app, err := guestApp(podDir, name, ra.App.Exec, ra.App.Environment, ra.App.WorkingDirectory, ra.App.User, ra.App.Group, ra.App.SupplementaryGIDs)
		if err != nil {
			return nil, nil, fmt.Errorf("app %s: %w", name, err)
		}
		// The DNS files go first, so that a volume on /etc still covers them.
		app.Mounts = append(dnsMounts(plan.configFiles), mounts[name]...)
		if err := applyIsolators(&app, ra.App.Isolators, opts); err != nil {
			return nil, nil, fmt.Errorf("app %s: %w", name, err)
		}
		if err := setEventHandlers(&app, filepath.Join(podDir, AppRootfs(name)), ra.App.EventHandlers); err != nil {
			return nil, nil, fmt.Errorf("app %s: %w", name, err)
		}
		if err := SetStdioModes(&app, ra, len(pm.Apps)); err != nil {
			return nil, nil, fmt.Errorf("app %s: %w", name, err)
		}
		app.View = AppView(podDir, name, "", ra.ReadOnlyRootFS).Path()
		if ra.ReadOnlyRootFS {
			// The guest cannot create the mount points of the API file
			// systems in a read-only export, so the host does.
			if err := makeMountPoints(filepath.Join(podDir, AppRootfs(name))); err != nil {
				return nil, nil, fmt.Errorf("app %s: %w", name, err)
			}
			app.ReadOnlyRootfs = true
		}
		cfg.Apps = append(cfg.Apps, app)
	}
	cfg.Volumes = len(plan.views) > 0
	return cfg, &Volumes{plan: plan}, nil
}

// AppShareDir is the folder of the apps share, relative to the pod
// directory.
const AppShareDir = RuntimeDir + "/apps"

// AppView returns the view of an app's rootfs in the apps share. An app
// added at run time gets a suffix, unique in the pod's life. The guest
// caches what it has seen of the share, so an app removed and added again
// under the same name must not reuse the old view's path.
func AppView(podDir, name, suffix string, readOnly bool) volume.View {
	view := name
	if suffix != "" {
		// App names have no dots, so no view of one app is another's.
		view += "." + suffix
	}
	return volume.View{Name: view, Source: filepath.Join(podDir, AppRootfs(name)), ReadOnly: readOnly}
}

// AppsShare returns the apps share of a pod with a view of each app's
// rootfs.
func AppsShare(podDir string, cfg *guestconfig.Pod) *volume.Share {
	share := &volume.Share{Dir: filepath.Join(podDir, AppShareDir)}
	for _, app := range cfg.Apps {
		share.Views = append(share.Views, AppView(podDir, app.Name, "", app.ReadOnlyRootfs))
	}
	return share
}

func guestApp(podDir, name string, exec []string, env types.Environment, workDir, user, group string, gids []int) (guestconfig.App, error) {
	app := guestconfig.App{Name: name}
	rootfs := path.Join(podDir, AppRootfs(name))
	if _, err := os.Stat(rootfs); err != nil {
		return app, fmt.Errorf("rootfs not found at %s: %w", rootfs, err)
	}

	if len(exec) == 0 {
		return app, fmt.Errorf("exec is empty; the image manifest or --exec must give a command")
	}
	if !path.IsAbs(exec[0]) {
		return app, fmt.Errorf("exec[0] %q is not an absolute path", exec[0])
	}
	if err := checkExecutable(rootfs, exec[0]); err != nil {
		return app, err
	}
	app.Exec = append([]string(nil), exec...)

	acct, err := resolveUser(rootfs, user)
	if err != nil {
		return app, err
	}
	gid, err := resolveGroup(rootfs, group)
	if err != nil {
		return app, err
	}
	if acct.uid == ^uint32(0) {
		return app, fmt.Errorf("user %q: %w", user, errReservedID)
	}
	if gid == ^uint32(0) {
		return app, fmt.Errorf("group %q: %w", group, errReservedID)
	}
	app.UID, app.GID = acct.uid, gid
	for _, g := range gids {
		if g < 0 || int64(g) >= int64(^uint32(0)) {
			return app, fmt.Errorf("supplementary GID %d is out of range", g)
		}
		app.SupplementaryGIDs = append(app.SupplementaryGIDs, uint32(g))
	}

	if workDir == "" {
		workDir = "/"
	}
	app.WorkingDirectory = workDir
	app.Env = appEnv(name, acct, env)
	return app, nil
}

// setEventHandlers checks the app's pre-start and post-stop handlers and
// records their exec lines. The guest runs them in the app's environment.
func setEventHandlers(app *guestconfig.App, rootfs string, handlers []types.EventHandler) error {
	for _, eh := range handlers {
		var dst *[]string
		switch eh.Name {
		case "pre-start":
			dst = &app.PreStart
		case "post-stop":
			dst = &app.PostStop
		default:
			return fmt.Errorf("unknown event handler %q; use pre-start or post-stop", eh.Name)
		}
		if *dst != nil {
			return fmt.Errorf("event handler %s appears twice", eh.Name)
		}
		if len(eh.Exec) == 0 || !path.IsAbs(eh.Exec[0]) {
			return fmt.Errorf("event handler %s: exec[0] must be an absolute path, got %q", eh.Name, eh.Exec)
		}
		if err := checkExecutable(rootfs, eh.Exec[0]); err != nil {
			return fmt.Errorf("event handler %s: %w", eh.Name, err)
		}
		*dst = append([]string(nil), eh.Exec...)
	}
	return nil
}

// checkExecutable makes a missing or non-executable exec[0] an error before
// the VM boots. The lookup stays inside the app rootfs.
func checkExecutable(rootfs, file string) error {
	f, err := inroot.Open(rootfs, file, unix.O_PATH)
	if err != nil {
		return fmt.Errorf("executable %q not found in the app image: %w", file, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat executable %q: %w", file, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("executable %q is not a regular file (mode %s)", file, info.Mode())
	}
	if info.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("executable %q has no execute permission (mode %s)", file, info.Mode())
	}
	return nil
}

// appEnv builds the app's environment: PATH from the appc execution
// environment, HOME, USER, LOGNAME and SHELL from the app's account, then the
// manifest's variables, which override the defaults except AC_APP_NAME.
func appEnv(name string, acct account, manifestEnv types.Environment) []string {
	defaults := [][2]string{
		{"PATH", DefaultPath},
		{"HOME", acct.home},
		{"USER", acct.name},
		{"LOGNAME", acct.name},
		{"SHELL", acct.shell},
	}

	var env []string
	index := map[string]int{}
	set := func(k, v string) {
		if i, ok := index[k]; ok {
			env[i] = k + "=" + v
			return
		}
		index[k] = len(env)
		env = append(env, k+"="+v)
	}
	for _, kv := range defaults {
		set(kv[0], kv[1])
	}
	for _, kv := range manifestEnv {
		if kv.Name == "AC_APP_NAME" {
			continue
		}
		set(kv.Name, kv.Value)
	}
	set("AC_APP_NAME", name)
	return env
}

// guestMountPoints are the folders the guest mounts proc, sysfs and /dev on
// in every app rootfs.
var guestMountPoints = []string{"proc", "sys", "dev"}

// makeMountPoints creates the guest's mount points at the top of rootfs.
// mkdirat(2) never follows a symlink in the last component, and the guest
// rejects a mount point that is a symlink.
func makeMountPoints(rootfs string) error {
	fd, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer unix.Close(fd)
	for _, dir := range guestMountPoints {
		if err := unix.Mkdirat(fd, dir, 0o755); err != nil && err != unix.EEXIST {
			return fmt.Errorf("create /%s in the read-only rootfs: %w", dir, err)
		}
	}
	return nil
}

// ValidateHostname checks a hostname for sethostname(2) in the guest.
func ValidateHostname(h string) error {
	if h == "" || len(h) > 64 || strings.ContainsAny(h, "/\x00 \n") {
		return fmt.Errorf("invalid hostname %q: use 1 to 64 characters without spaces or slashes", h)
	}
	return nil
}
