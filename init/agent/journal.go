package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// The agent copies each app's output into the guest journal as well as to
// the host, one journal entry per line, with SYSLOG_IDENTIFIER set to the
// app's name. It uses journald's native protocol (a datagram of fields per
// entry, https://systemd.io/JOURNAL_NATIVE_PROTOCOL/). The copy never holds
// up the output to the host: entries wait in a bounded queue, and a sender
// goroutine passes them to journald. When the queue is full, lines are left
// out of the journal, counted and logged, but still reach the host.

// Paths of journald's sockets in the guest (systemd 252).
const (
	// JournalSocket is journald's native socket, which systemd creates
	// before journald starts.
	JournalSocket = "/run/systemd/journal/socket"
	// JournalVarlinkSocket is journald's varlink socket, which journald
	// creates when it starts.
	JournalVarlinkSocket = "/run/systemd/journal/io.systemd.journal"
)

const (
	// maxJournalLine is the longest line that becomes one journal entry.
	// Longer lines are split, as journald splits the output of services
	// at its default LineMax= of 48K.
	maxJournalLine = 48 * 1024
	// maxJournalQueue bounds the bytes of entries that wait for journald,
	// for all apps together.
	maxJournalQueue = 1 << 20
	// journalSendTimeout bounds one send when journald's socket queue is
	// full. The entry is then left out.
	journalSendTimeout = 2 * time.Second
	// journalDrainTimeout bounds the wait for an app's last entries to
	// reach journald's socket after its output ended.
	journalDrainTimeout = 2 * time.Second
	// journalSyncTimeout bounds the flush and sync of the journal at the
	// end of the pod. The apps start after journald, so it runs by then.
	// If it had not started within 20 s, the apps started without it, their
	// last lines may miss the journal, and the agent logs a warning to the
	// kernel log.
	journalSyncTimeout = 5 * time.Second
	// journalStartTimeout bounds the wait for journald to start. systemd
	// starts it with the agent, before the apps.
	journalStartTimeout = 5 * time.Minute
)

// Syslog priorities of the apps' output: stdout is informational and
// stderr an error, so `journalctl -p err` shows what the apps wrote to
// stderr.
const (
	priorityInfo  = 6
	priorityError = 3
)

// journal queues entries for journald and sends them from one goroutine.
type journal struct {
	log *slog.Logger
	// path is journald's native socket and varlinkPath its varlink socket.
	path, varlinkPath string
	// flushed is closed once journald writes to the journal share.
	flushed chan struct{}

	mu   sync.Mutex
	cond *sync.Cond
	// queue contains the encoded entries, and queuedBytes their size.
	queue       [][]byte
	queuedBytes int
	// enqueued counts the entries ever queued. sent counts those that the
	// sender is done with, whether the send succeeded or not.
	enqueued, sent uint64
	// dropped counts the lines left out since the last report.
	dropped int
}

// newJournal starts the sender for journald's native socket at path.
func newJournal(log *slog.Logger, path, varlinkPath string) *journal {
	j := &journal{log: log, path: path, varlinkPath: varlinkPath, flushed: make(chan struct{})}
	j.cond = sync.NewCond(&j.mu)
	go j.run()
	return j
}

// flushWhenStarted waits for journald to start and makes it move the
// journal from guest RAM to the journal share and write there from then on,
// as `journalctl --flush` does on a normal system. The guest's init creates
// journald's flag for that, so journald writes to the share from its start
// and the call only confirms it. It matters for a journald without the flag.
func (j *journal) flushWhenStarted() {
	err := callJournald(j.varlinkPath, "io.systemd.Journal.FlushToVar", time.Now().Add(journalStartTimeout))
	if err != nil {
		j.log.Error("flush the journal to the journal share failed; the agent tries again when the pod ends", "error", err)
		return
	}
	close(j.flushed)
}

// enqueue adds an entry and returns its sequence number, or 0 when the
// queue is full and the entry was left out.
func (j *journal) enqueue(entry []byte) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.queuedBytes+len(entry) > maxJournalQueue {
		j.dropped++
		return 0
	}
	j.queue = append(j.queue, entry)
	j.queuedBytes += len(entry)
	j.enqueued++
	j.cond.Broadcast()
	return j.enqueued
}

// run sends the queued entries in order.
func (j *journal) run() {
	var conn *net.UnixConn
	for {
		j.mu.Lock()
		for len(j.queue) == 0 {
			j.cond.Wait()
		}
		entry := j.queue[0]
		j.queue[0] = nil
		j.queue = j.queue[1:]
		j.queuedBytes -= len(entry)
		j.mu.Unlock()

		var err error
		if conn == nil {
			conn, err = net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.path, Net: "unixgram"})
			if err != nil {
				conn = nil
			}
		}
		if conn != nil {
			_ = conn.SetWriteDeadline(time.Now().Add(journalSendTimeout))
			_, err = conn.Write(entry)
		}

		j.mu.Lock()
		j.sent++
		if err != nil {
			j.dropped++
		}
		dropped := 0
		if len(j.queue) == 0 && j.dropped > 0 {
			dropped, j.dropped = j.dropped, 0
		}
		j.cond.Broadcast()
		j.mu.Unlock()
		if dropped > 0 {
			// Once per time the queue empties, not once per line.
			j.log.Warn("app output lines left out of the journal: journald did not keep up or is not running; they still reached the host",
				"lines", dropped, "socket", j.path, "last_error", err)
		}
	}
}

// waitSent waits until the sender is done with entry seq, for at most
// timeout, and reports whether it is.
func (j *journal) waitSent(seq uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		j.mu.Lock()
		j.cond.Broadcast()
		j.mu.Unlock()
	})
	defer timer.Stop()
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.sent < seq {
		if !time.Now().Before(deadline) {
			return false
		}
		j.cond.Wait()
	}
	return true
}

// lastEnqueued returns the sequence number of the newest entry.
func (j *journal) lastEnqueued() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.enqueued
}

// journalStream turns one output stream of an app into journal entries.
type journalStream struct {
	journal *journal
	// fields are the encoded fields that every entry of the stream has.
	fields []byte
	lines  lineSplitter
	last   uint64
}

// stream returns the writer of one app stream ("stdout" or "stderr"). A
// nil journal returns a stream that discards everything.
func (j *journal) stream(app, name string) *journalStream {
	if j == nil {
		return nil
	}
	priority := priorityInfo
	if name == "stderr" {
		priority = priorityError
	}
	var fields []byte
	fields = appendField(fields, "SYSLOG_IDENTIFIER", []byte(app))
	fields = appendField(fields, "PRIORITY", []byte(fmt.Sprint(priority)))
	return &journalStream{journal: j, fields: fields}
}

// write queues an entry for each line that p completes.
func (s *journalStream) write(p []byte) {
	if s == nil {
		return
	}
	s.lines.split(p, s.add)
}

// close queues the unfinished last line, if any, and waits until the
// stream's entries are in journald's socket, so that they are in the
// journal before the app's exit is reported.
func (s *journalStream) close() {
	if s == nil {
		return
	}
	s.lines.flush(s.add)
	if s.last > 0 && !s.journal.waitSent(s.last, journalDrainTimeout) {
		s.journal.log.Warn("the last app output lines did not reach journald in time", "timeout", journalDrainTimeout)
	}
}

func (s *journalStream) add(line []byte) {
	entry := make([]byte, 0, len(s.fields)+len(line)+32)
	entry = append(entry, s.fields...)
	entry = appendField(entry, "MESSAGE", line)
	if seq := s.journal.enqueue(entry); seq > 0 {
		s.last = seq
	}
}

// lineSplitter cuts a byte stream into lines without their newline, and
// lines longer than maxJournalLine into pieces of that size.
type lineSplitter struct {
	partial []byte
}

// split calls emit for every line that p completes. The slice passed to
// emit is valid only during the call.
func (l *lineSplitter) split(p []byte, emit func([]byte)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			for len(l.partial) >= maxJournalLine {
				emit(l.partial[:maxJournalLine])
				l.partial = append(l.partial[:0], l.partial[maxJournalLine:]...)
			}
			return
		}
		line := p[:i]
		p = p[i+1:]
		if len(l.partial) > 0 {
			l.partial = append(l.partial, line...)
			line = l.partial
		}
		for len(line) > maxJournalLine {
			emit(line[:maxJournalLine])
			line = line[maxJournalLine:]
		}
		emit(line)
		l.partial = l.partial[:0]
	}
}

// flush emits the unfinished last line, if any.
func (l *lineSplitter) flush(emit func([]byte)) {
	if len(l.partial) > 0 {
		emit(l.partial)
		l.partial = l.partial[:0]
	}
}

// appendField encodes one field of the native protocol: NAME=value and a
// newline, or, for a value with a newline, the name, a newline, the
// value's length as a 64-bit little-endian number, the value and a newline.
func appendField(buf []byte, name string, value []byte) []byte {
	if bytes.IndexByte(value, '\n') < 0 {
		buf = append(buf, name...)
		buf = append(buf, '=')
		buf = append(buf, value...)
		return append(buf, '\n')
	}
	buf = append(buf, name...)
	buf = append(buf, '\n')
	buf = binary.LittleEndian.AppendUint64(buf, uint64(len(value)))
	buf = append(buf, value...)
	return append(buf, '\n')
}

// sync makes journald store every entry queued so far in the journal
// share and sync it to the host. It runs at the end of the pod, after
// every app's output ended.
func (j *journal) sync() error {
	deadline := time.Now().Add(journalSyncTimeout)
	if !j.waitSent(j.lastEnqueued(), time.Until(deadline)) {
		return errors.New("app output entries still queued for journald")
	}
	select {
	case <-j.flushed:
	default:
		// journald may not have started yet in a short pod, so the
		// entries are still in guest RAM.
		if err := callJournald(j.varlinkPath, "io.systemd.Journal.FlushToVar", deadline); err != nil {
			return err
		}
	}
	// journald replies once it processed the messages queued in its
	// sockets and synced the journal files.
	return callJournald(j.varlinkPath, "io.systemd.Journal.Synchronize", deadline)
}

// callJournald calls a method without parameters on journald's varlink
// socket at path (https://varlink.org: a JSON object ended by a NUL byte
// each way). Until deadline, it waits for journald to create the socket.
func callJournald(path, method string, deadline time.Time) error {
	var conn net.Conn
	for {
		var err error
		conn, err = net.DialTimeout("unix", path, time.Until(deadline))
		if err == nil {
			break
		}
		if time.Now().Add(50 * time.Millisecond).After(deadline) {
			return fmt.Errorf("call %s on journald at %s: %w", method, path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}

	request, err := json.Marshal(map[string]any{"method": method, "parameters": map[string]any{}})
	if err != nil {
		return err
	}
	if _, err := conn.Write(append(request, 0)); err != nil {
		return fmt.Errorf("call %s on journald: %w", method, err)
	}

	reply, err := bufio.NewReader(conn).ReadBytes(0)
	if err != nil {
		return fmt.Errorf("read journald's reply to %s: %w", method, err)
	}
	var r struct {
		Error      string          `json:"error"`
		Parameters json.RawMessage `json:"parameters"`
	}
	if err := json.Unmarshal(reply[:len(reply)-1], &r); err != nil {
		return fmt.Errorf("invalid reply of journald to %s: %w", method, err)
	}
	if r.Error != "" {
		return fmt.Errorf("journald failed %s: %s %s", method, r.Error, strings.TrimSpace(string(r.Parameters)))
	}
	return nil
}
