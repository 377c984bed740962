package pod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseDNSConfMode(t *testing.T) {
	cases := map[string]DNSMode{
		"":                          {"default", "default"},
		"resolv=host,hosts=stage0":  {"host", "stage0"},
		"hosts=host":                {"default", "host"},
		"resolv=none":               {"none", "default"},
		"hosts=default,resolv=host": {"host", "default"},
	}
	for in, want := range cases {
		got, err := ParseDNSConfMode(in)
		if err != nil {
			t.Errorf("ParseDNSConfMode(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("ParseDNSConfMode(%q) = %+v, want %+v", in, got, want)
		}
	}
	for in, wantErr := range map[string]string{
		"resolv=bogus": `resolv="bogus"`,
		"hosts=none":   `hosts="none"`,
		"dns=host":     `invalid --dns-conf-mode "dns=host"`,
		"resolv":       `invalid --dns-conf-mode "resolv"`,
	} {
		if _, err := ParseDNSConfMode(in); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseDNSConfMode(%q) error = %v, want it to contain %q", in, err, wantErr)
		}
	}
}

func TestDNSFilesFromStage0(t *testing.T) {
	podDir := t.TempDir()
	etc := filepath.Join(podDir, Stage1Rootfs, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "rkt-resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "rkt-hosts"), []byte("192.0.2.7 db"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := dnsFiles(podDir, DNSMode{Resolv: "stage0", Hosts: "stage0"}, "web")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{
		"etc/resolv.conf": []byte("nameserver 192.0.2.53\n"),
		"etc/hosts":       []byte("192.0.2.7 db\n127.0.0.1\tweb\n"),
	}
	if !reflect.DeepEqual(files, want) {
		t.Errorf("files = %q, want %q", files, want)
	}

	files, err = dnsFiles(t.TempDir(), DNSMode{Resolv: "stage0", Hosts: "default"}, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 {
		t.Errorf("without rkt's files: files = %q, want none", files)
	}
}
