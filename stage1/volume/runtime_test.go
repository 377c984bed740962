package volume

import "testing"

func TestIsMountPoint(t *testing.T) {
	mounted, err := isMountPoint("/proc")
	if err != nil || !mounted {
		t.Errorf("isMountPoint(/proc) = %v, %v; want true", mounted, err)
	}
	dir := t.TempDir()
	mounted, err = isMountPoint(dir)
	if err != nil || mounted {
		t.Errorf("isMountPoint(%s) = %v, %v; want false for a plain folder", dir, mounted, err)
	}
	if _, err := isMountPoint(dir + "/missing"); err == nil {
		t.Error("isMountPoint of a missing path returned no error")
	}
}

func TestAppViewPaths(t *testing.T) {
	for _, tc := range []struct {
		view View
		want string
	}{
		{View{Name: "web"}, "rw/web"},
		{View{Name: "web.18ee3a46", ReadOnly: true}, "ro/web.18ee3a46"},
	} {
		if got := tc.view.Path(); got != tc.want {
			t.Errorf("Path of %+v = %q, want %q", tc.view, got, tc.want)
		}
	}
}
