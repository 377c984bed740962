package pod

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// RunStateFile keeps what the run entrypoint decided about a mutable pod,
// relative to the pod directory. The app commands read it to configure an
// app added later the same way. It lives in the runtime folder, which no
// share exports to the guest.
const RunStateFile = RuntimeDir + "/run-state.json"

// RunState is the input to the apps' guest configuration besides the pod
// manifest: the run flags and the networks' results.
type RunState struct {
	Options            Options `json:"options"`
	StopTimeoutSeconds int     `json:"stopTimeoutSeconds"`
	// MemoryMiB is the VM's RAM, which bounds an added app's memory limit.
	MemoryMiB int `json:"memoryMiB"`
	// ResolvConf is the apps' /etc/resolv.conf from the networks' DNS
	// settings, if any.
	ResolvConf []byte `json:"resolvConf,omitempty"`
	// MetadataURL is the apps' AC_METADATA_URL (--mds-token), if any.
	MetadataURL string `json:"metadataURL,omitempty"`
}

// Complete applies to an app what the run state adds to the manifest's
// configuration.
func (s *RunState) Complete(app *guestconfig.App) {
	if s.MetadataURL != "" {
		app.Env = setEnv(app.Env, "AC_METADATA_URL", s.MetadataURL)
	}
}

// Save writes the run state into the pod's runtime folder.
func (s *RunState) Save(podDir string) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(podDir, RunStateFile), data, 0o600); err != nil {
		return fmt.Errorf("write the pod's run state: %w", err)
	}
	return nil
}

// LoadRunState reads the run state that the run entrypoint saved.
func LoadRunState(podDir string) (*RunState, error) {
	data, err := os.ReadFile(filepath.Join(podDir, RunStateFile))
	if err != nil {
		return nil, fmt.Errorf("read the pod's run state (is the pod a running mutable pod?): %w", err)
	}
	var s RunState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", RunStateFile, err)
	}
	return &s, nil
}

// setEnv sets name to value in env, replacing an earlier value.
func setEnv(env []string, name, value string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			env[i] = name + "=" + value
			return env
		}
	}
	return append(env, name+"="+value)
}
