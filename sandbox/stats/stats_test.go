package stats

import (
	"os"
	"testing"
	"time"
)

type knownSet map[string]bool

func (k knownSet) Len() int           { return len(k) }
func (k knownSet) Has(id string) bool { return k[id] }

// TestCPURates: the first sample averages since start, later ones measure
// the window since the last, and calls closer than minWindow repeat it.
func TestCPURates(t *testing.T) {
	var r CPURates
	live := knownSet{"c": true}
	sec := int64(time.Second)
	start := int64(100 * sec)
	if got := r.Rate(live, "c", start+2*sec, uint64(sec), start); got != 5e8 {
		t.Errorf("first sample: %d, want 0.5 cores since start", got)
	}
	if got := r.Rate(live, "c", start+2*sec+sec/2, uint64(2*sec), start); got != 5e8 {
		t.Errorf("within the window: %d, want the last rate again", got)
	}
	if got := r.Rate(live, "c", start+4*sec, uint64(3*sec), start); got != 1e9 {
		t.Errorf("two seconds later with two more CPU seconds: %d, want 1 core", got)
	}
	if got := r.Rate(live, "new", start, 10, 0); got != 0 {
		t.Errorf("no start time: %d, want 0", got)
	}
}

// TestCPURatesPrune: samples of IDs the runtime no longer knows go once
// the map outgrows the live ones.
func TestCPURatesPrune(t *testing.T) {
	var r CPURates
	live := knownSet{"keep": true}
	r.Rate(live, "keep", int64(time.Second), 1, 0)
	for i := range 100 {
		r.Rate(live, string(rune('a'+i%26))+string(rune('a'+i/26)), int64(time.Second), 1, 0)
	}
	if _, ok := r.m["keep"]; !ok || len(r.m) >= 64 {
		t.Errorf("%d samples left (keep: %v), want the gone ones pruned and the live one kept", len(r.m), ok)
	}
}

func TestNetDevSkipsLoopback(t *testing.T) {
	ifs, err := NetDev(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "lo" {
			t.Errorf("loopback reported: %+v", i)
		}
	}
}
