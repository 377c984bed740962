package pod

import (
	"fmt"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// Annotations in which rkt (1.30.0, with RKT_EXPERIMENT_ATTACH=true) passes
// an app's --stdin, --stdout and --stderr.
const (
	AnnotationStdin  = "coreos.com/rkt/stage2/stdin"
	AnnotationStdout = "coreos.com/rkt/stage2/stdout"
	AnnotationStderr = "coreos.com/rkt/stage2/stderr"
)

// SetStdioModes sets the app's stream modes from the annotations of ra.
// Stdin in interactive mode is the same as --interactive, so it needs a
// pod of one app, as in rkt. apps is the pod's number of apps.
func SetStdioModes(app *guestconfig.App, ra schema.RuntimeApp, apps int) error {
	stdin, stdout, stderr, err := StdioModes(ra)
	if err != nil {
		return err
	}
	if stdin == guestconfig.ModeInteractive {
		if apps != 1 {
			return fmt.Errorf("stdin mode %q needs a pod of one app; this one has %d", stdin, apps)
		}
		app.Stdin = true
	}
	app.StdinMode, app.StdoutMode, app.StderrMode = stdin, stdout, stderr
	return nil
}

// StdioModes returns the modes of the app's stdin, stdout and stderr from
// its annotations, with the defaults for those that it does not set.
func StdioModes(ra schema.RuntimeApp) (stdin, stdout, stderr guestconfig.StreamMode, err error) {
	modes := make([]guestconfig.StreamMode, 3)
	streams := []string{guestconfig.Stdin, guestconfig.Stdout, guestconfig.Stderr}
	for i, name := range []string{AnnotationStdin, AnnotationStdout, AnnotationStderr} {
		value, _ := ra.Annotations.Get(name)
		if modes[i], err = guestconfig.ParseStreamMode(streams[i], value); err != nil {
			return "", "", "", fmt.Errorf("annotation %s: %w", name, err)
		}
	}
	return modes[0], modes[1], modes[2], nil
}

// FindApp returns the app of the pod manifest with the given name, or an
// error that names the pod's apps.
func FindApp(pm *schema.PodManifest, name string) (*schema.RuntimeApp, error) {
	if ra := pm.Apps.Get(types.ACName(name)); ra != nil {
		return ra, nil
	}
	var names []string
	for _, a := range pm.Apps {
		names = append(names, a.Name.String())
	}
	return nil, fmt.Errorf("app %q is not in the pod; its apps are: %v", name, names)
}
