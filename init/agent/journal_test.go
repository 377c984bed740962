package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLineSplitter(t *testing.T) {
	long := strings.Repeat("x", maxJournalLine)
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"lines", []string{"a\nb\n"}, []string{"a", "b"}},
		{"empty line", []string{"a\n\nb\n"}, []string{"a", "", "b"}},
		{"line across writes", []string{"he", "llo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"partial last line", []string{"a\nrest"}, []string{"a", "rest"}},
		{"binary bytes", []string{"\x00\xff\r\n"}, []string{"\x00\xff\r"}},
		{"line at the limit", []string{long + "\n"}, []string{long}},
		{"long line split", []string{long + "yz\n"}, []string{long, "yz"}},
		{"long partial line split", []string{long[:10], long[10:] + "yz"}, []string{long, "yz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l lineSplitter
			var got []string
			emit := func(line []byte) { got = append(got, string(line)) }
			for _, w := range tt.writes {
				l.split([]byte(w), emit)
			}
			l.flush(emit)
			if !slices.Equal(got, tt.want) {
				t.Errorf("lines = %q, want %q", shortLines(got), shortLines(tt.want))
			}
		})
	}
}

// shortLines keeps lines of maxJournalLine bytes readable in a failure.
func shortLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if len(l) > 40 {
			l = l[:20] + "..." + l[len(l)-10:]
		}
		out = append(out, l)
	}
	return out
}

func TestAppendField(t *testing.T) {
	got := appendField(nil, "SYSLOG_IDENTIFIER", []byte("web"))
	if string(got) != "SYSLOG_IDENTIFIER=web\n" {
		t.Errorf("plain field = %q", got)
	}
	got = appendField(nil, "MESSAGE", []byte("a\nb"))
	want := append([]byte("MESSAGE\n"), 3, 0, 0, 0, 0, 0, 0, 0)
	want = append(want, "a\nb\n"...)
	if !bytes.Equal(got, want) {
		t.Errorf("field with a newline = %q, want %q", got, want)
	}
}

// parseEntry decodes a native protocol datagram into its fields.
func parseEntry(t *testing.T, data []byte) map[string]string {
	t.Helper()
	fields := map[string]string{}
	for len(data) > 0 {
		i := bytes.IndexAny(data, "=\n")
		if i < 0 {
			t.Fatalf("truncated field in %q", data)
		}
		name := string(data[:i])
		if data[i] == '=' {
			end := bytes.IndexByte(data, '\n')
			fields[name] = string(data[i+1 : end])
			data = data[end+1:]
			continue
		}
		data = data[i+1:]
		n := binary.LittleEndian.Uint64(data)
		fields[name] = string(data[8 : 8+n])
		if data[8+n] != '\n' {
			t.Fatalf("field %s does not end with a newline", name)
		}
		data = data[9+n:]
	}
	return fields
}

// listenJournal starts a fake native socket and returns its path and the
// datagrams it received, decoded.
func listenJournal(t *testing.T) (string, <-chan map[string]string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	entries := make(chan map[string]string, 100)
	go func() {
		buf := make([]byte, 1<<17)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			entries <- parseEntry(t, buf[:n])
		}
	}()
	return path, entries
}

func receive(t *testing.T, entries <-chan map[string]string) map[string]string {
	t.Helper()
	select {
	case e := <-entries:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no journal entry within 5 s")
	}
	return nil
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestJournalStreamSendsEntries(t *testing.T) {
	path, entries := listenJournal(t)
	j := newJournal(discard, path, "")

	out := j.stream("web", "stdout")
	out.write([]byte("first\nsec"))
	out.write([]byte("ond\nno newline"))
	out.close()
	errs := j.stream("web", "stderr")
	errs.write([]byte("oops\n"))
	errs.close()

	for _, want := range []struct{ message, priority string }{
		{"first", "6"}, {"second", "6"}, {"no newline", "6"}, {"oops", "3"},
	} {
		e := receive(t, entries)
		if e["MESSAGE"] != want.message || e["PRIORITY"] != want.priority || e["SYSLOG_IDENTIFIER"] != "web" {
			t.Errorf("entry = %q, want MESSAGE %q, PRIORITY %s, SYSLOG_IDENTIFIER web", e, want.message, want.priority)
		}
	}
}

func TestJournalStreamCloseWaitsForSend(t *testing.T) {
	path, _ := listenJournal(t)
	j := newJournal(discard, path, "")
	s := j.stream("app", "stdout")
	for i := 0; i < 50; i++ {
		s.write([]byte("line\n"))
	}
	s.close()
	j.mu.Lock()
	sent, enqueued := j.sent, j.enqueued
	j.mu.Unlock()
	if sent != 50 || enqueued != 50 {
		t.Errorf("after close, %d of %d entries were sent, want 50 of 50", sent, enqueued)
	}
}

func TestJournalWithoutSocketKeepsGoing(t *testing.T) {
	j := newJournal(discard, filepath.Join(t.TempDir(), "missing"), "")
	s := j.stream("app", "stdout")
	s.write([]byte("lost\n"))
	done := make(chan struct{})
	go func() { s.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(journalDrainTimeout + 2*time.Second):
		t.Fatal("close blocked although journald's socket is missing")
	}
}

func TestJournalQueueBounded(t *testing.T) {
	// No sender runs, so nothing leaves the queue.
	j := &journal{log: discard}
	j.cond = sync.NewCond(&j.mu)
	entry := make([]byte, maxJournalQueue/4+1)
	var accepted int
	for i := 0; i < 5; i++ {
		if j.enqueue(entry) > 0 {
			accepted++
		}
	}
	if accepted != 3 {
		t.Errorf("%d entries of %d bytes accepted, want 3 within %d bytes", accepted, len(entry), maxJournalQueue)
	}
	if j.dropped != 2 {
		t.Errorf("dropped = %d, want 2", j.dropped)
	}
}

// fakeJournald serves one varlink call per connection on a unix socket and
// records the methods called. It replies with the JSON object reply.
func fakeJournald(t *testing.T, reply string) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "io.systemd.journal")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	methods := make(chan string, 10)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			n, _ := conn.Read(buf)
			var call struct {
				Method string `json:"method"`
			}
			if n == 0 || buf[n-1] != 0 || json.Unmarshal(buf[:n-1], &call) != nil {
				methods <- "invalid call: " + string(buf[:n])
			} else {
				methods <- call.Method
			}
			conn.Write(append([]byte(reply), 0))
			conn.Close()
		}
	}()
	return path, methods
}

func TestCallJournald(t *testing.T) {
	path, methods := fakeJournald(t, `{"parameters":{}}`)
	if err := callJournald(path, "io.systemd.Journal.Synchronize", time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if m := <-methods; m != "io.systemd.Journal.Synchronize" {
		t.Errorf("method = %q, want io.systemd.Journal.Synchronize", m)
	}
}

func TestCallJournaldError(t *testing.T) {
	path, _ := fakeJournald(t, `{"error":"io.systemd.Journal.NotSupportedByNamespaces","parameters":{}}`)
	err := callJournald(path, "io.systemd.Journal.FlushToVar", time.Now().Add(5*time.Second))
	if err == nil || !strings.Contains(err.Error(), "NotSupportedByNamespaces") {
		t.Errorf("error = %v, want it to name the varlink error", err)
	}
}

func TestCallJournaldWaitsForSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "io.systemd.journal")
	start := time.Now()
	err := callJournald(path, "io.systemd.Journal.Synchronize", start.Add(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error = %v, want one naming %s", err, path)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond || waited > 2*time.Second {
		t.Errorf("waited %s for the missing socket, want about 300 ms", waited)
	}
}

func TestJournalSyncFlushesOnlyOnce(t *testing.T) {
	varlink, methods := fakeJournald(t, `{"parameters":{}}`)
	j := newJournal(discard, filepath.Join(t.TempDir(), "socket"), varlink)

	// Before the flush at start, the sync flushes too.
	if err := j.sync(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"io.systemd.Journal.FlushToVar", "io.systemd.Journal.Synchronize"} {
		if m := <-methods; m != want {
			t.Errorf("method = %q, want %q", m, want)
		}
	}

	j.flushWhenStarted()
	if m := <-methods; m != "io.systemd.Journal.FlushToVar" {
		t.Errorf("method of the flush at start = %q, want io.systemd.Journal.FlushToVar", m)
	}
	if err := j.sync(); err != nil {
		t.Fatal(err)
	}
	if m := <-methods; m != "io.systemd.Journal.Synchronize" {
		t.Errorf("method of the sync after the flush = %q, want only io.systemd.Journal.Synchronize", m)
	}
}
