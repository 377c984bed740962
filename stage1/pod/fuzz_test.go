package pod

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/guestconfig"
)

// FuzzGuestConfig feeds pod manifests to the conversion into the guest's
// configuration. Whatever the manifest, the conversion returns a
// configuration or an error, never panics, and a configuration it returns
// survives the trip through JSON to the guest. The seed corpus is in
// testdata/fuzz/FuzzGuestConfig; run with
// go test ./stage1/pod -run '^$' -fuzz FuzzGuestConfig -fuzztime 10m.
func FuzzGuestConfig(f *testing.F) {
	for _, name := range []string{"single-app.json", "two-apps-volumes-isolators.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pm, err := ParseManifest(data)
		if err != nil {
			return
		}
		var names []string
		for _, a := range pm.Apps {
			names = append(names, a.Name.String())
		}
		if len(names) > 25 {
			return
		}
		podDir := makePodDir(t, names...)
		cfg, vols, err := GuestConfig(podDir, pm, Options{UUID: testUUID, Hostname: "rkt-" + testUUID})
		if err != nil {
			return
		}
		if vols == nil {
			t.Fatal("GuestConfig returned a configuration without volumes")
		}
		encoded, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("encode guest config: %v", err)
		}
		var decoded guestconfig.Pod
		if err := json.Unmarshal(encoded, &decoded); err != nil {
			t.Fatalf("decode guest config: %v", err)
		}
		if len(decoded.Apps) != len(pm.Apps) {
			t.Fatalf("guest config has %d apps, the manifest %d", len(decoded.Apps), len(pm.Apps))
		}
		for _, app := range decoded.Apps {
			for _, m := range app.Mounts {
				if len(m.Target) == 0 || m.Target[0] != '/' {
					t.Fatalf("app %s: mount target %q is not absolute", app.Name, m.Target)
				}
			}
		}
	})
}
