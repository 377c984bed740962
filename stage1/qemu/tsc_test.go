package qemu

import "testing"

func TestHostTSCkHzPlausible(t *testing.T) {
	khz, err := HostTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	// Any x86 TSC of the last twenty years runs between 500 MHz and 10 GHz.
	if khz < 500_000 || khz > 10_000_000 {
		t.Errorf("TSC frequency %d kHz is implausible", khz)
	}
	t.Logf("host TSC: %d kHz", khz)
}
