package agent

import (
	"testing"

	"github.com/stage1-vm/stage1-vm/internal/agentproto"
)

func TestBroadcastDetachesLaggingClient(t *testing.T) {
	var r attachRegistry
	r.mu.Lock()
	app := r.app("web")
	fast := &attachClient{endpoints: []string{agentproto.AttachStdout}, queue: make(chan attachChunk, clientQueueLength+1)}
	slow := &attachClient{endpoints: []string{agentproto.AttachStdout}, queue: make(chan attachChunk, clientQueueLength)}
	other := &attachClient{endpoints: []string{agentproto.AttachStderr}, queue: make(chan attachChunk, 1)}
	for _, c := range []*attachClient{fast, slow, other} {
		app.clients[c] = struct{}{}
	}
	r.mu.Unlock()

	for i := 0; i <= clientQueueLength; i++ {
		r.broadcast("web", agentproto.AttachStdout, agentproto.Stdout, []byte("x"))
	}

	if !slow.lagged || !slow.closed {
		t.Error("a client whose queue is full was not detached")
	}
	if _, ok := app.clients[slow]; ok {
		t.Error("the detached client is still registered")
	}
	if fast.lagged || len(fast.queue) != clientQueueLength+1 {
		t.Errorf("the client with room lagged %v and queued %d chunks, want %d", fast.lagged, len(fast.queue), clientQueueLength+1)
	}
	if len(other.queue) != 0 {
		t.Errorf("a stderr client got %d stdout chunks", len(other.queue))
	}
	// The slow client's queue keeps what it had, then ends.
	n := 0
	for range slow.queue {
		n++
	}
	if n != clientQueueLength {
		t.Errorf("the detached client's queue held %d chunks, want %d", n, clientQueueLength)
	}
}
