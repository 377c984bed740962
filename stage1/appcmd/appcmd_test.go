package appcmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseFlags(t *testing.T) {
	f, err := ParseFlags("app-add", []string{"--debug=true", "--uuid=6733b8e9-4f3b-4b5a-8e1b-6e4ee2f7c5a1", "--app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Debug || f.UUID != "6733b8e9-4f3b-4b5a-8e1b-6e4ee2f7c5a1" || f.App != "web" {
		t.Errorf("flags = %+v", f)
	}
	f, err = ParseFlags("app-stop", []string{"--debug=false", "--app=web"})
	if err != nil || f.Debug || f.App != "web" || f.UUID != "" {
		t.Errorf("ParseFlags(app-stop) = %+v, %v", f, err)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--debug=false"}, "--app is missing"},
		{[]string{"--app=Web_1"}, `invalid --app "Web_1"`},
		{[]string{"--app=../x"}, `invalid --app "../x"`},
		{[]string{"--app=web", "--uuid=nope"}, `invalid --uuid "nope"`},
		{[]string{"--app=web", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"--app=web", "--force"}, "flag provided but not defined: -force"},
	} {
		_, err := ParseFlags("app-start", tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestManifestLockedWithoutLockFile(t *testing.T) {
	if manifestLocked(t.TempDir()) {
		t.Error("manifestLocked reported a lock in a pod directory without pod.lck")
	}
}

func TestManifestLockedWhileHeld(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, manifestLock))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if manifestLocked(dir) {
		t.Fatal("manifestLocked reported a lock nobody holds")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if !manifestLocked(dir) {
		t.Error("manifestLocked missed the exclusive lock that rkt app rm would hold")
	}
}
