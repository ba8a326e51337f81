package perfresult

import (
	"path/filepath"
	"strings"
	"testing"
)

func testRun() *Run {
	return &Run{
		Commit: "abc1234", Date: "2026-12-07T02:00:00Z", Command: "make bench",
		Runtimes: []Runtime{
			{Key: "peapod", Name: "peapod"}, {Key: "peapod-builtin", Name: "peapod built-in"},
			{Key: "containerd-1.6", Name: "containerd 1.6", Anchor: true},
			{Key: "crio", Name: "CRI-O", Anchor: true},
		},
		Rows: []Row{
			{Section: "headline", Name: "RunPodSandbox", Unit: "ms", Goal: &Goal{Ratio: 0.25, Text: "≤ 0.25× best anchor"},
				Cells: map[string]Cell{"peapod": {N: 3, P50: 20, P99: 30}, "containerd-1.6": {N: 3, P50: 80, P99: 90}, "crio": {N: 3, P50: 100, P99: 60}}},
			{Section: "headline", Name: "50 pods", Unit: "s", Goal: &Goal{Ratio: 0.4, Ref: "crio", Text: "≤ 0.4× CRI-O"},
				Cells: map[string]Cell{"peapod": {N: 1, P50: 5}, "containerd-1.6": {N: 1, P50: 8}, "crio": {N: 1, P50: 10}}},
			{Section: "builtin", Name: "per-pod PSS", Unit: "KiB", Goal: &Goal{Max: 120, Subject: "peapod-builtin", Text: "≤ 120 KiB"},
				Cells: map[string]Cell{"peapod-builtin": {N: 1, P50: 206}, "crio": {N: 1, P50: 368}}},
		},
	}
}

// The verdicts use the best anchor of the row, a named anchor, or an
// absolute bound, and the subject the goal names.
func TestVerdict(t *testing.T) {
	r := testRun()
	for i, want := range []struct {
		v   float64
		met bool
	}{{0.25, true}, {0.5, false}, {206, false}} {
		v, met, ok := r.Verdict(r.Rows[i])
		if !ok || v != want.v || met != want.met {
			t.Errorf("row %q: got %v %v %v, want %v %v", r.Rows[i].Name, v, met, ok, want.v, want.met)
		}
	}
	if best := r.Best(r.Rows[0]); best != "containerd-1.6" {
		t.Errorf("best anchor %q, want containerd-1.6 (lowest p50, not p99)", best)
	}
}

// The generated section replaces only the text between the markers, and
// the JSON survives a write and a read.
func TestSpliceAndRoundTrip(t *testing.T) {
	r := testRun()
	path := filepath.Join(t.TempDir(), "run.json")
	if err := r.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	md := back.Markdown()
	for _, want := range []string{"`abc1234`", "| RunPodSandbox (ms) | 3 | 20.0 / 30.0 | – | 80.0 / 90.0 | 100 / 60.0 | 0.25 / 0.33 | ≤ 0.25× best anchor | met (0.25) |",
		"**NOT met** (0.50)", "**NOT met** (206)"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	doc := "# Perf\nmethod\n" + BeginMarker + "\nold figures\n" + EndMarker + "\nafter\n"
	out, err := Splice(doc, md)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "old figures") || !strings.HasPrefix(out, "# Perf\nmethod\n") || !strings.HasSuffix(out, EndMarker+"\nafter\n") {
		t.Errorf("splice:\n%s", out)
	}
	if _, err := Splice("no markers", md); err == nil {
		t.Error("splice without markers: no error")
	}
}
