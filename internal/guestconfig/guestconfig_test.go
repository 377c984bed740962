package guestconfig

import (
	"reflect"
	"testing"
)

func TestInterfacesRoundTrip(t *testing.T) {
	pod := &Pod{UUID: "u", Hostname: "h", Interfaces: []Interface{{
		Name: "eth0", MAC: "0a:58:ac:10:1c:02", MTU: 1400,
		Addresses: []Address{{CIDR: "172.16.28.2/24", NoPrefixRoute: true}},
		Routes:    []Route{{Dst: "172.16.28.1/32"}, {Gateway: "172.16.28.1"}},
	}}}
	dir := t.TempDir()
	if err := Write(dir, pod); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir + "/" + FileName)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, pod) {
		t.Errorf("loaded %+v, want %+v", got, pod)
	}
}
