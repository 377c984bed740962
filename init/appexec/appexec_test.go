package appexec

import "testing"

func TestExitStatus(t *testing.T) {
	cases := []struct {
		code, status string
		want         int
		wantErr      bool
	}{
		{"exited", "0", 0, false},
		{"exited", "3", 3, false},
		{"exited", "255", 255, false},
		{"killed", "TERM", 143, false},
		{"killed", "KILL", 137, false},
		{"dumped", "SEGV", 139, false},
		{"exited", "256", 1, true},
		{"exited", "x", 1, true},
		{"killed", "NOPE", 1, true},
		{"", "", 1, true},
		{"weird", "1", 1, true},
	}
	for _, c := range cases {
		got, err := ExitStatus(c.code, c.status)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("ExitStatus(%q, %q) = %d, %v; want %d, error %v", c.code, c.status, got, err, c.want, c.wantErr)
		}
	}
}

func TestCPUMax(t *testing.T) {
	cases := map[uint64]string{
		1:    "1000 100000",
		9:    "1000 100000",
		10:   "1000 100000",
		1500: "150000 100000",
	}
	for millis, want := range cases {
		if got := cpuMax(millis); got != want {
			t.Errorf("cpuMax(%d) = %q, want %q", millis, got, want)
		}
	}
}
