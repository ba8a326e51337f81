package exec

import (
	"bytes"
	"testing"
)

// TestSyncOutputBudget: both streams together stay within the budget, each
// keeps its reserve against a flood on the other, and nothing written after
// take reaches the answer.
func TestSyncOutputBudget(t *testing.T) {
	o := &syncOutput{budget: 100, spare: 10}
	out, errs := o.stream(0), o.stream(1)
	chunk := bytes.Repeat([]byte{'o'}, 7)
	for range 100 {
		if n, err := out.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v: a full buffer must not fail the command's write", n, err)
		}
	}
	if got := o.bufs[0].Len(); got != 90 {
		t.Errorf("a flood on stdout kept %d bytes, want 90 (the budget less stderr's reserve)", got)
	}
	errs.Write(bytes.Repeat([]byte{'e'}, 50))
	stdout, stderr := o.take()
	if len(stdout) != 90 || len(stderr) != 10 {
		t.Errorf("kept %d + %d bytes, want 90 + 10", len(stdout), len(stderr))
	}
	errs.Write([]byte("late"))
	out.Write([]byte("late"))
	if o.bufs[0].Len() != 90 || o.bufs[1].Len() != 10 {
		t.Error("a write after take changed the answer")
	}

	// The other way round, and a stream that started first keeps its bytes.
	o = &syncOutput{budget: 100, spare: 10}
	o.stream(1).Write(bytes.Repeat([]byte{'e'}, 30))
	o.stream(0).Write(bytes.Repeat([]byte{'o'}, 500))
	o.stream(1).Write(bytes.Repeat([]byte{'e'}, 500))
	stdout, stderr = o.take()
	if len(stdout)+len(stderr) != 100 || len(stderr) != 30 {
		t.Errorf("kept stdout %d, stderr %d; want 70 and 30", len(stdout), len(stderr))
	}
	if maxSyncOutput+64 > 16<<20 {
		t.Errorf("maxSyncOutput %d leaves no room for the answer's other fields in 16 MiB", maxSyncOutput)
	}
}
