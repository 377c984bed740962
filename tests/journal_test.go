package tests

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/tests/stage0"
)

// journalEntry is the part of a `journalctl -o json` entry that the tests
// check.
type journalEntry struct {
	Identifier string
	Priority   string
	Message    string
	Transport  string
	PID        string
}

// readJournal runs `journalctl -D <pod>/stage1/rootfs/var/log/journal -o
// json` on the host and returns its entries.
func readJournal(t *testing.T, podDir string) []journalEntry {
	t.Helper()
	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip("journalctl not found; install Debian's systemd package")
	}
	dir := filepath.Join(podDir, "stage1/rootfs/var/log/journal")
	cmd := exec.Command(journalctl, "-D", dir, "-o", "json", "--no-pager")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("journalctl -D %s: %v\n%s", dir, err, stderr.String())
	}

	var entries []journalEntry
	scanner := bufio.NewScanner(bytes.NewReader(out))
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		var raw map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &raw); err != nil {
			t.Fatalf("journalctl printed invalid JSON: %v\n%s", err, scanner.Text())
		}
		entries = append(entries, journalEntry{
			Identifier: journalString(raw["SYSLOG_IDENTIFIER"]),
			Priority:   journalString(raw["PRIORITY"]),
			Message:    journalString(raw["MESSAGE"]),
			Transport:  journalString(raw["_TRANSPORT"]),
			PID:        journalString(raw["_PID"]),
		})
	}
	return entries
}

// journalString decodes a field of journalctl's JSON output: a string, or
// an array of byte values for a field that is not printable text.
func journalString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []any:
		var b []byte
		for _, x := range v {
			if f, ok := x.(float64); ok {
				b = append(b, byte(f))
			}
		}
		return string(b)
	}
	return ""
}

// appLines returns the messages of app's entries with the given priority,
// in journal order.
func appLines(entries []journalEntry, app, priority string) []string {
	var lines []string
	for _, e := range entries {
		if e.Identifier == app && e.Priority == priority {
			lines = append(lines, e.Message)
		}
	}
	return lines
}

func TestJournalKeepsAppOutput(t *testing.T) {
	d := newDriver(t)
	pod, err := d.Start([]stage0.App{
		busyboxApp(t, "first", "/bin/sh", "-c", "echo one; echo two >&2; echo; printf 'tab\\there\\n'; printf no-newline"),
		busyboxApp(t, "second", "/bin/sh", "-c", "sleep 1; echo three; echo last-line"),
	}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	res := waitResult(t, pod, 120*time.Second)
	if res.ExitCode != 0 {
		t.Fatalf("exit status %d, stderr:\n%s", res.ExitCode, res.Stderr)
	}
	// The journal copy leaves rkt run's output as it was.
	for _, want := range []string{"one\n\ntab\there\nno-newline", "three\nlast-line\n"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("stdout %q lacks %q", res.Stdout, want)
		}
	}
	if res.Stderr != "two\n" {
		t.Errorf("stderr = %q, want %q", res.Stderr, "two\n")
	}

	entries := readJournal(t, pod.Dir)
	if got, want := appLines(entries, "first", "6"), []string{"one", "", "tab\there", "no-newline"}; !slices.Equal(got, want) {
		t.Errorf("journal stdout lines of first = %q, want %q", got, want)
	}
	if got, want := appLines(entries, "first", "3"), []string{"two"}; !slices.Equal(got, want) {
		t.Errorf("journal stderr lines of first = %q, want %q", got, want)
	}
	if got, want := appLines(entries, "second", "6"), []string{"three", "last-line"}; !slices.Equal(got, want) {
		t.Errorf("journal stdout lines of second = %q, want %q", got, want)
	}

	// The guest's own messages are there too: systemd's and the kernel's.
	var systemd, kernel bool
	for _, e := range entries {
		systemd = systemd || e.PID == "1"
		kernel = kernel || e.Transport == "kernel"
	}
	if !systemd {
		t.Errorf("the journal has no entry from systemd (_PID=1) among %d entries", len(entries))
	}
	if !kernel {
		t.Errorf("the journal has no kernel message among %d entries", len(entries))
	}
}

// TestJournalTinyMemoryLimit runs journald in the smallest VM that the
// size rules give: 64 MiB for the guest plus a 4 MiB limit. The app
// outlives journald's start, so journald writes to the share in that VM.
func TestJournalTinyMemoryLimit(t *testing.T) {
	d := newDriver(t)
	app := busyboxApp(t, "tiny", "/bin/sh", "-c", "echo before; sleep 3; echo after")
	app.App.Isolators = types.Isolators{isolator(t, "resource/memory", `{"limit":"4M"}`)}
	pod, err := d.Start([]stage0.App{app}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	res := waitResult(t, pod, 120*time.Second)
	if res.ExitCode != 0 || res.Stdout != "before\nafter\n" {
		t.Fatalf("exit status %d, stdout %q, want 0 and before, after; stderr:\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if got := appLines(readJournal(t, pod.Dir), "tiny", "6"); !slices.Equal(got, []string{"before", "after"}) {
		t.Errorf("journal lines of tiny = %q, want [before after]", got)
	}
}

func TestJournalReadableWhileRunning(t *testing.T) {
	d := newDriver(t)
	pod := startPod(t, d, []stage0.App{
		busyboxApp(t, "talker", "/bin/sh", "-c", "echo running-line; exec sleep 600"),
	})
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(appLines(readJournal(t, pod.Dir), "talker", "6"), "running-line") {
		if time.Now().After(deadline) {
			t.Fatal("the line did not reach the journal on the host within 30 s of ready")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := pod.Stop(false); err != nil {
		t.Fatal(err)
	}
	waitResult(t, pod, 60*time.Second)
}

func TestRktJournalPerApp(t *testing.T) {
	e := requireRkt(t)
	uuidFile := filepath.Join(e.dataDir, "uuid")
	stdout, stderr, status := e.run(t, "run", "--net=none", "--stage1-path="+e.aci, "--uuid-file-save="+uuidFile,
		e.appACI, "--name=a", "--exec=/bin/sh", "--", "-c", "echo from-a",
		"---", e.appACI, "--name=b", "--exec=/bin/sh", "--", "-c", "echo from-b >&2")
	if status != 0 {
		t.Fatalf("rkt run: status %d, stderr:\n%s", status, stderr)
	}
	if stdout != "from-a\n" {
		t.Errorf("stdout = %q, want %q", stdout, "from-a\n")
	}
	uuid, err := os.ReadFile(uuidFile)
	if err != nil {
		t.Fatal(err)
	}
	// rkt keeps an exited pod in pods/run until gc.
	entries := readJournal(t, filepath.Join(e.dataDir, "pods/run", strings.TrimSpace(string(uuid))))
	if got := appLines(entries, "a", "6"); !slices.Equal(got, []string{"from-a"}) {
		t.Errorf("journal stdout lines of a = %q, want [from-a]", got)
	}
	if got := appLines(entries, "b", "3"); !slices.Equal(got, []string{"from-b"}) {
		t.Errorf("journal stderr lines of b = %q, want [from-b]", got)
	}
}

// journaldUnitInACI is the path of journald's unit in the stage1 image.
const journaldUnitInACI = "rootfs/stage1-vm/guest/usr/lib/systemd/system/systemd-journald.service"

// TestHungJournaldStillStartsApps boots an image whose journald never
// reports that it started. Its start job times out after 20 s, and the app
// must then run without journald and report its own exit status.
func TestHungJournaldStillStartsApps(t *testing.T) {
	d := newDriver(t)
	hung := filepath.Join(t.TempDir(), "hung-journald.aci")
	// The power-button service runs until the VM ends and never notifies
	// systemd, as a hung journald would.
	replaceInACI(t, d.ACI, hung, journaldUnitInACI, func(unit string) string {
		lines := strings.Split(unit, "\n")
		for i, line := range lines {
			if strings.HasPrefix(line, "ExecStart=") {
				lines[i] = "ExecStart=/stage1-vm/bin/stage1-vm-init power-button"
			}
		}
		return strings.Join(lines, "\n")
	})

	d.ACI = hung
	app := busyboxApp(t, "late", "/bin/sh", "-c", "echo ran; exit 3")
	pod, err := d.Start([]stage0.App{app}, stage0.Options{Env: tcg})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()

	// The app waited forever when the fallback failed, so the test has a
	// limit of its own: 20 s of waiting, the boot, and the agent's 5 s
	// for the missing journal.
	res := waitResult(t, pod, 120*time.Second)
	if res.ExitCode != 3 {
		t.Errorf("exit status %d, want 3; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	if res.Stdout != "ran\n" {
		t.Errorf("stdout = %q, want %q", res.Stdout, "ran\n")
	}
}

// replaceInACI copies the gzip-compressed ACI at src to dst, with the file
// name rewritten by edit.
func replaceInACI(t *testing.T, src, dst, name string, edit func(string) string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()

	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatalf("read %s: %v", src, err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	zw, err := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}

	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	found := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", src, err)
		}

		var body io.Reader = tr
		if strings.TrimPrefix(hdr.Name, "./") == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			edited := []byte(edit(string(data)))
			hdr.Size = int64(len(edited))
			body = bytes.NewReader(edited)
			found = true
		}

		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("%s has no %s", src, name)
	}

	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
