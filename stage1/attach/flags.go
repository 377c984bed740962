package attach

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
)

// Actions of the attach entrypoint, from rkt attach --mode (rkt 1.30.0):
// list for --mode=list, auto-attach for auto, custom-attach for a list
// of endpoints.
const (
	ActionList   = "list"
	ActionAuto   = "auto-attach"
	ActionCustom = "custom-attach"
)

// Flags are the attach entrypoint's arguments.
type Flags struct {
	Action string
	App    string
	Debug  bool
	// Endpoints are the agentproto.Attach* endpoints of custom-attach.
	Endpoints []string
}

// ParseFlags parses `--action=ACTION --app=NAME [--debug=BOOL]` and, for
// custom-attach, `--tty-in= --tty-out= --stdin= --stdout= --stderr=`, each
// true or false.
func ParseFlags(args []string) (*Flags, error) {
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	action := fs.String("action", "", "list, auto-attach or custom-attach")
	app := fs.String("app", "", "name of the app to attach to")
	debug := fs.Bool("debug", false, "log debug messages to stderr")
	endpoints := map[string]*bool{}
	for _, e := range []string{agentproto.AttachTTYIn, agentproto.AttachTTYOut, agentproto.AttachStdin, agentproto.AttachStdout, agentproto.AttachStderr} {
		endpoints[e] = fs.Bool(e, false, "attach "+e+" (custom-attach)")
	}

	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("invalid attach arguments %q: %w", strings.Join(args, " "), err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected attach arguments %q", fs.Args())
	}

	f := &Flags{Action: *action, App: *app, Debug: *debug}
	switch f.Action {
	case ActionList, ActionAuto, ActionCustom:
	case "":
		return nil, errors.New("missing --action: expected list, auto-attach or custom-attach")
	default:
		return nil, fmt.Errorf("invalid --action %q: expected list, auto-attach or custom-attach", f.Action)
	}
	if f.App == "" {
		return nil, errors.New("missing --app: name the app to attach to")
	}
	if _, err := types.NewACName(f.App); err != nil {
		return nil, fmt.Errorf("invalid --app %q: %w", f.App, err)
	}

	for _, e := range agentproto.AttachEndpoints {
		if *endpoints[e] {
			f.Endpoints = append(f.Endpoints, e)
		}
	}
	if f.Action == ActionCustom && len(f.Endpoints) == 0 {
		return nil, errors.New("custom-attach needs at least one of --tty-in, --tty-out, --stdin, --stdout and --stderr set to true")
	}
	if f.Action != ActionCustom && len(f.Endpoints) > 0 {
		return nil, fmt.Errorf("--action=%s takes no endpoints, got %v", f.Action, f.Endpoints)
	}
	return f, nil
}
