package units

import (
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestRenderGolden(t *testing.T) {
	oomScore := -100
	pod := &guestconfig.Pod{
		UUID: "6ee58c77-c0fe-4567-82bd-6b08ed314883",
		Apps: []guestconfig.App{
			{Name: "web", MemoryMax: 44040192, CPUMillis: 1505, CPUWeight: 50, OOMScoreAdjust: &oomScore, PostStop: []string{"/bin/cleanup"}},
			{Name: "side-car"},
		},
	}
	files := Render(pod)
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)

	var got strings.Builder
	for _, name := range names {
		got.WriteString("# " + name + "\n" + files[name] + "\n")
	}
	golden := filepath.Join("testdata", "two-apps.units")
	if *update {
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got.String() != string(want) {
		t.Errorf("units differ from %s (run go test -update after checking the change):\n%s", golden, got.String())
	}
}

func TestRenderAppUnits(t *testing.T) {
	files := Render(&guestconfig.Pod{Apps: []guestconfig.App{{Name: "a"}}})
	unit, ok := files["app-a.service"]
	if !ok {
		t.Fatalf("no unit for app a: %v", files)
	}
	for _, line := range []string{
		"ExecStart=" + guestconfig.GuestInit + " app-exec a",
		"ExecStopPost=" + guestconfig.GuestInit + " app-exited a",
		"Conflicts=shutdown.target",
	} {
		if !strings.Contains(unit, line+"\n") {
			t.Errorf("app unit lacks %q:\n%s", line, unit)
		}
	}
	if !strings.Contains(files[Target], "app-a.service") {
		t.Errorf("target does not want the app:\n%s", files[Target])
	}
}

func TestRenderStopTimeout(t *testing.T) {
	files := Render(&guestconfig.Pod{StopTimeoutSeconds: 3, Apps: []guestconfig.App{{Name: "a"}}})
	if !strings.Contains(files["app-a.service"], "TimeoutStopSec=3\n") {
		t.Errorf("app unit lacks TimeoutStopSec=3:\n%s", files["app-a.service"])
	}
	files = Render(&guestconfig.Pod{Apps: []guestconfig.App{{Name: "a"}}})
	if !strings.Contains(files["app-a.service"], "TimeoutStopSec=10\n") {
		t.Errorf("app unit without a configured grace period lacks TimeoutStopSec=10:\n%s", files["app-a.service"])
	}
}

// An app added to a mutable pod gets the unit it would have had at boot.
func TestAppUnitsMatchRender(t *testing.T) {
	limit := 3
	app := guestconfig.App{Name: "late", MemoryMax: 1 << 20, OOMScoreAdjust: &limit, PostStop: []string{"/bin/true"}}
	pod := &guestconfig.Pod{StopTimeoutSeconds: 7, Mutable: true}
	added := AppUnits(pod, app)
	pod.Apps = []guestconfig.App{app}
	booted := Render(pod)
	if len(added) != 1 || added["app-late.service"] != booted["app-late.service"] {
		t.Errorf("AppUnits = %v, want only the unit Render gives:\n%s", added, booted["app-late.service"])
	}
	for _, line := range []string{"TimeoutStopSec=7", "Delegate=yes", "OOMScoreAdjust=3", "ExecStopPost=-" + guestconfig.GuestInit + " post-stop late"} {
		if !strings.Contains(added["app-late.service"], line+"\n") {
			t.Errorf("the added app's unit lacks %q", line)
		}
	}
}
