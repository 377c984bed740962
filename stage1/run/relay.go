package run

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/stage1-vm/stage1-vm/internal/report"
)

// acceptAll waits for QEMU to connect to every listener.
func acceptAll(listeners map[string]net.Listener, names []string, qemuDone <-chan struct{}) (map[string]net.Conn, error) {
	type result struct {
		name string
		conn net.Conn
		err  error
	}
	results := make(chan result, len(names))
	for _, name := range names {
		go func(name string) {
			c, err := listeners[name].Accept()
			results <- result{name, c, err}
		}(name)
	}
	conns := map[string]net.Conn{}
	timeout := time.After(60 * time.Second)
	for len(conns) < len(names) {
		select {
		case r := <-results:
			if r.err != nil {
				return conns, fmt.Errorf("accept on %s: %w", r.name, r.err)
			}
			conns[r.name] = r.conn
		case <-qemuDone:
			return conns, errors.New("QEMU exited before it connected its ports")
		case <-timeout:
			return conns, errors.New("QEMU did not connect its ports within 60 s")
		}
	}
	return conns, nil
}

// readReports parses the guest's report lines. A line the parser rejects,
// or one longer than report.MaxLineLength, is logged and skipped: the guest
// is untrusted.
func readReports(conn net.Conn, out chan<- report.Message, log *slog.Logger) {
	defer close(out)
	r := bufio.NewReaderSize(conn, report.MaxLineLength+1)
	rejected := 0
	reject := func(err error) {
		rejected++
		if rejected <= 10 {
			log.Warn("invalid report from the guest", "error", err)
		}
	}
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			reject(fmt.Errorf("report line longer than %d bytes", report.MaxLineLength))
			// Skip the rest of the line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Warn("status port closed", "error", err)
			}
			return
		}
		m, perr := report.Parse(strings.TrimSuffix(string(line), "\n"))
		if perr != nil {
			reject(perr)
			continue
		}
		out <- m
	}
}

func drain(ch <-chan report.Message) <-chan report.Message {
	if ch == nil {
		c := make(chan report.Message)
		close(c)
		return c
	}
	return ch
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// drainOnError writes to w until a write fails, then discards. A relay
// must keep reading whatever happens to rkt's stdout (a closed pipe, a full
// disk): a guest port without a reader blocks the apps writing to it.
type drainOnError struct {
	w      io.Writer
	failed bool
}

func (d *drainOnError) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}

// tail keeps the last bytes written to it.
type tail struct {
	mu   sync.Mutex
	buf  []byte
	size int
}

func newTail(size int) *tail { return &tail{size: size} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.size {
		t.buf = t.buf[len(t.buf)-t.size:]
	}
	return len(p), nil
}

// explain returns the last console lines as a suffix for an error message.
// In debug mode the console already went to stderr, so it is not repeated.
// Control characters are replaced, since the guest controls these bytes and
// they end up on the user's terminal.
func (t *tail) explain(debug bool) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if debug {
		return "; the guest console is above"
	}
	text := strings.TrimSpace(sanitize(string(t.buf)))
	if text == "" {
		return "; the guest console was empty (run with --debug to see the boot)"
	}
	lines := strings.Split(text, "\n")
	const keep = 20
	if len(lines) > keep {
		// A kernel panic's reason comes before its call trace, which alone
		// would fill the lines kept.
		first := len(lines) - keep
		for i, l := range lines {
			if strings.Contains(l, "Kernel panic") && i < first {
				first = i
				break
			}
		}
		lines = lines[first:]
		if len(lines) > 2*keep {
			lines = lines[:2*keep]
		}
	}
	return "; last guest console lines:\n" + strings.Join(lines, "\n")
}

// sanitize makes guest output safe to print: valid UTF-8, with control
// characters other than newline and tab shown as '?'.
func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == '\r':
			return -1
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return '?'
		}
		return r
	}, s)
}
