package run

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/report"
)

func TestReadReportsSkipsBadLines(t *testing.T) {
	guest, host := net.Pipe()
	out := make(chan report.Message, 8)
	go readReports(host, out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() {
		io.WriteString(guest, "hello\n")
		io.WriteString(guest, strings.Repeat("x", 10000)+"\n")
		io.WriteString(guest, "exit ../../etc 1\n")
		io.WriteString(guest, "pod-exit 7\n")
		guest.Close()
	}()
	var got []report.Message
	for m := range out {
		got = append(got, m)
	}
	want := []report.Message{{Kind: report.Hello}, {Kind: report.PodExit, Status: 7}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestExplainSanitizesConsole(t *testing.T) {
	tl := newTail(consoleTailSize)
	tl.Write([]byte("boot\r\n\x1b]0;PWNED\x07\x1b[2Jfake line\n"))
	got := tl.explain(false)
	if strings.ContainsAny(got, "\x1b\x07\r") {
		t.Errorf("explain kept control characters: %q", got)
	}
	if !strings.Contains(got, "boot\n") || !strings.Contains(got, "fake line") {
		t.Errorf("explain lost the text: %q", got)
	}
}

func TestExplainKeepsPanicReason(t *testing.T) {
	tl := newTail(consoleTailSize)
	var b strings.Builder
	b.WriteString("Kernel panic - not syncing: Out of memory\n")
	for i := 0; i < 30; i++ {
		b.WriteString(" ? 0xffffffff8112547c\n")
	}
	tl.Write([]byte(b.String()))
	if got := tl.explain(false); !strings.Contains(got, "Out of memory") {
		t.Errorf("explain dropped the panic reason:\n%s", got)
	}
}
