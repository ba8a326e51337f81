package exec

import (
	"bytes"
	"sync"
)

// What ExecSync keeps of an exec's output. Its answer must reach the
// kubelet whole: the kubelet's CRI client (and peapod's server) take
// messages of at most 16 MiB, and an answer above that is an error
// (ResourceExhausted), so a probe that printed too much would fail for its
// size rather than for its code. Both streams together are kept within
// maxSyncOutput, a little below 16 MiB for the answer's other fields, and
// the daemon buffers no more than that per ExecSync, however long the
// command prints (a probe is the pod author's command). Each stream is
// guaranteed syncStreamReserve of that, so a flood on one stream cannot
// take the other's first bytes (a probe's error message on stderr).
const (
	maxSyncOutput     = 16<<20 - 64<<10
	syncStreamReserve = 1 << 20
)

// syncOutput collects an ExecSync's stdout and stderr within one budget.
// Writers may outlive the exec (a background process of the command keeps
// the pipes until the daemon closes them), so take ends the collection
// under the lock: later writes are dropped, never raced with the answer.
type syncOutput struct {
	mu     sync.Mutex
	bufs   [2]bytes.Buffer
	taken  bool
	budget int // maxSyncOutput; smaller in tests
	spare  int // syncStreamReserve; smaller in tests
}

func newSyncOutput() *syncOutput {
	return &syncOutput{budget: maxSyncOutput, spare: syncStreamReserve}
}

// stream returns the writer of stream i (0 stdout, 1 stderr). Writes never
// fail: what is over the budget is dropped, so the command is never
// blocked or signalled by a full buffer.
func (o *syncOutput) stream(i int) syncStream { return syncStream{o, i} }

// room is what stream i may still add: it may hold up to the budget less
// what the other holds, or less the other's reserve while the other holds
// less than that.
func (o *syncOutput) room(i int) int {
	other := o.bufs[1-i].Len()
	return o.budget - max(other, o.spare) - o.bufs[i].Len()
}

// take ends the collection and returns both streams.
func (o *syncOutput) take() (stdout, stderr []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.taken = true
	return o.bufs[0].Bytes(), o.bufs[1].Bytes()
}

type syncStream struct {
	o *syncOutput
	i int
}

func (s syncStream) Write(p []byte) (int, error) {
	o := s.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.taken {
		return len(p), nil
	}
	if room := o.room(s.i); room > 0 {
		o.bufs[s.i].Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (syncStream) Close() error { return nil }
