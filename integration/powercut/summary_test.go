package powercut

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPowercutSummary runs on the host after the last boot: it adds up
// every boot's result, prints one line and fails on any violation, any
// leftover, a boot that failed or a cut the guest never reported back from.
func TestPowercutSummary(t *testing.T) {
	work := os.Getenv("POWERCUT_WORK")
	if work == "" {
		t.Skip("run by integration/powercut/powercut.sh")
	}
	cuts, _ := strconv.Atoi(os.Getenv("POWERCUT_CUTS"))
	f, err := os.Open(filepath.Join(work, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var boots, seen, recovered, absent, resurrected, cleanups, leftovers int
	s := bufio.NewScanner(f)
	for s.Scan() {
		var r result
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			t.Errorf("results line %q: %v", s.Text(), err)
			continue
		}
		boots++
		seen += r.Seen
		recovered += r.Recovered
		absent += r.Absent
		resurrected += r.Resurrected
		if r.Cleaned {
			cleanups++
		}
		leftovers += len(r.Leftovers)
		for _, v := range r.Violations {
			t.Errorf("boot %s: violation: %s", r.Boot, v)
		}
		for _, l := range r.Leftovers {
			t.Errorf("boot %s: leftover: %s", r.Boot, l)
		}
	}
	created := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(work, "journal.log")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if fl := strings.Fields(line); len(fl) == 3 && fl[1] == "created" {
				created[fl[2]] = true
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(work, "failures")); err == nil {
		t.Errorf("failed boots:\n%s", b)
	}
	if boots != cuts+1 {
		t.Errorf("%d boots reported a result, want %d (%d cuts + the final boot)", boots, cuts+1, cuts)
	}
	t.Logf("powercut summary: cuts %d, boots %d, pods created %d, pod checks after cuts %d (recovered %d, absent %d), resurrected %d, cleanups %d, leftovers %d",
		cuts, boots, len(created), seen, recovered, absent, resurrected, cleanups, leftovers)
	if seen != recovered+absent {
		t.Errorf("seen %d != recovered %d + absent %d", seen, recovered, absent)
	}
}
