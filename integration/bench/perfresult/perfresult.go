// Package perfresult is the output of `make bench` (BenchmarkPerformance):
// the run's figures as JSON, and their rendering as the tables of
// docs/performance.md. The bench writes a Run; the perfdoc command reads
// it and rewrites the doc's generated section, so every figure in the
// doc comes from one run of the commit it names.
package perfresult

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// Run is one run of the suite.
type Run struct {
	Commit    string    `json:"commit"`  // git describe --always --dirty
	Date      string    `json:"date"`    // UTC, RFC 3339, at the start
	Command   string    `json:"command"` // how it was started
	Quick     bool      `json:"quick"`   // BENCH_QUICK=1: reduced sizes, a harness check only
	WallS     float64   `json:"wall_s"`
	LoadStart string    `json:"load_start"` // /proc/loadavg 1/5/15 min
	LoadEnd   string    `json:"load_end"`
	Machine   string    `json:"machine"`
	Runtimes  []Runtime `json:"runtimes"` // in column order
	Rows      []Row     `json:"rows"`
	Notes     []string  `json:"notes,omitempty"`
}

// Runtime is one column.
type Runtime struct {
	Key     string `json:"key"`     // "peapod", "peapod-builtin", "containerd-1.6", ...
	Name    string `json:"name"`    // as printed
	Version string `json:"version"` // CRI Version's RuntimeVersion
	Anchor  bool   `json:"anchor"`  // a reference runtime the goals compare with
}

// Goal is what a row must reach (issue #21).
type Goal struct {
	// Ratio: peapod's p50 at most Ratio times the reference's p50.
	Ratio float64 `json:"ratio,omitempty"`
	// Ref is the reference: "" the best (lowest p50) anchor of the row,
	// else an anchor's key ("crio").
	Ref string `json:"ref,omitempty"`
	// Max: peapod's value at most Max (absolute, the row's unit).
	Max float64 `json:"max,omitempty"`
	// Subject is the column the goal applies to ("peapod" if empty).
	Subject string `json:"subject,omitempty"`
	Text    string `json:"text"` // e.g. "≤ 0.25× best anchor (#21)"
}

// Cell is one runtime's figure in a row.
type Cell struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99,omitempty"` // 0: a single value (no p99)
}

// Row is one measured operation.
type Row struct {
	Section string          `json:"section"` // "headline", "builtin", "critest", "extra"
	Name    string          `json:"name"`
	Unit    string          `json:"unit"` // "ms", "s", "KiB", "MiB", "s/min"
	Goal    *Goal           `json:"goal,omitempty"`
	Cells   map[string]Cell `json:"cells"`
}

// Read loads a Run.
func Read(path string) (*Run, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Write stores a Run (temp + rename).
func (r *Run) Write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (r *Run) anchor(key string) bool {
	for _, rt := range r.Runtimes {
		if rt.Key == key {
			return rt.Anchor
		}
	}
	return false
}

// Best is the anchor with the lowest p50 in the row ("" if none).
func (r *Run) Best(row Row) string {
	best := ""
	for _, rt := range r.Runtimes {
		c, ok := row.Cells[rt.Key]
		if !rt.Anchor || !ok || c.N == 0 {
			continue
		}
		if best == "" || c.P50 < row.Cells[best].P50 {
			best = rt.Key
		}
	}
	return best
}

// Verdict evaluates the row's goal: the value compared, and whether it
// is met. ok is false when the row has no goal or lacks a figure.
func (r *Run) Verdict(row Row) (value float64, met, ok bool) {
	g := row.Goal
	if g == nil {
		return 0, false, false
	}
	subj := g.Subject
	if subj == "" {
		subj = "peapod"
	}
	c, has := row.Cells[subj]
	if !has || c.N == 0 {
		return 0, false, false
	}
	if g.Max > 0 {
		return c.P50, c.P50 <= g.Max, true
	}
	ref := g.Ref
	if ref == "" {
		ref = r.Best(row)
	}
	rc, has := row.Cells[ref]
	if !has || rc.N == 0 || rc.P50 <= 0 {
		return 0, false, false
	}
	x := c.P50 / rc.P50
	return x, x <= g.Ratio, true
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func (r *Run) cellText(row Row, key string) string {
	c, ok := row.Cells[key]
	if !ok || c.N == 0 {
		return "–"
	}
	if c.P99 == 0 {
		return num(c.P50)
	}
	return num(c.P50) + " / " + num(c.P99)
}

// ratioText is "x p50 / x p99" of the subject against the best anchor.
func (r *Run) ratioText(row Row, subj string) string {
	best := r.Best(row)
	c, ok := row.Cells[subj]
	if best == "" || !ok || c.N == 0 {
		return "–"
	}
	b := row.Cells[best]
	if b.P50 <= 0 {
		return "–"
	}
	s := fmt.Sprintf("%.2f", c.P50/b.P50)
	if c.P99 > 0 && b.P99 > 0 {
		s += fmt.Sprintf(" / %.2f", c.P99/b.P99)
	}
	return s
}

func (r *Run) name(key string) string {
	for _, rt := range r.Runtimes {
		if rt.Key == key {
			return rt.Name
		}
	}
	return key
}

// Sections in the order they are printed, with their titles.
var sections = []struct{ key, title string }{
	{"headline", "Same CNI conflist for every runtime (bridge + host-local + portmap from /usr/lib/cni)"},
	{"builtin", "peapod's built-in network (its own rows; the anchors' columns are the CNI figures above)"},
	{"critest", "critest --benchmark (same CNI conflist; pods and containers 2 at a time)"},
	{"extra", "Other figures (no goal)"},
}

// Markdown renders the run as the doc's generated section: a header with
// commit, date, command and load, then one table per section with p50 / p99
// per runtime, the ratio of peapod to the best anchor of the row, and the
// goal with its verdict.
func (r *Run) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of commit `%s`, %s, %s. Command: `%s`. Wall time %s; load average (1/5/15 min) %s at the start, %s at the end. %s\n\n",
		r.Commit, r.Date, map[bool]string{true: "**BENCH_QUICK=1 (reduced sizes: a check of the harness, not a measurement)**", false: "full sizes"}[r.Quick],
		r.Command, fmtDur(r.WallS), r.LoadStart, r.LoadEnd, r.Machine)
	fmt.Fprintf(&b, "Cells are p50 / p99 (one figure where there is one value); times in the row's unit. \"x best\" is peapod's p50 / p99 divided by those of the anchor with the lowest p50 in that row (peapod with CNI for the CNI rows, peapod built-in for its rows).\n\n")
	for _, rt := range r.Runtimes {
		if rt.Version != "" {
			fmt.Fprintf(&b, "- %s: %s\n", rt.Name, rt.Version)
		}
	}
	b.WriteString("\n")
	for _, sec := range sections {
		var rows []Row
		for _, row := range r.Rows {
			if row.Section == sec.key {
				rows = append(rows, row)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(&b, "**%s**\n\n", sec.title)
		b.WriteString("| operation | n |")
		for _, rt := range r.Runtimes {
			b.WriteString(" " + rt.Name + " |")
		}
		b.WriteString(" x best | goal | verdict |\n|---|---|")
		for range r.Runtimes {
			b.WriteString("---|")
		}
		b.WriteString("---|---|---|\n")
		for _, row := range rows {
			n := 0
			for _, c := range row.Cells {
				n = max(n, c.N)
			}
			fmt.Fprintf(&b, "| %s (%s) | %d |", row.Name, row.Unit, n)
			for _, rt := range r.Runtimes {
				b.WriteString(" " + r.cellText(row, rt.Key) + " |")
			}
			subj := "peapod"
			if row.Goal != nil && row.Goal.Subject != "" {
				subj = row.Goal.Subject
			} else if sec.key == "builtin" {
				subj = "peapod-builtin"
			}
			b.WriteString(" " + r.ratioText(row, subj) + " |")
			goal, verdict := "–", "–"
			if row.Goal != nil {
				goal = row.Goal.Text
				if v, met, ok := r.Verdict(row); ok {
					verdict = fmt.Sprintf("%s (%s)", map[bool]string{true: "met", false: "**NOT met**"}[met], num(v))
				} else {
					verdict = "no figure"
				}
			}
			fmt.Fprintf(&b, " %s | %s |\n", goal, verdict)
		}
		b.WriteString("\n")
	}
	for _, n := range r.Notes {
		b.WriteString("- " + n + "\n")
	}
	return b.String()
}

func fmtDur(s float64) string {
	return fmt.Sprintf("%dm%02ds", int(s)/60, int(s)%60)
}

// Markers delimit the generated section of docs/performance.md.
const (
	BeginMarker = "<!-- perf:begin (generated by integration/bench/perfdoc from make bench's JSON; do not edit) -->"
	EndMarker   = "<!-- perf:end -->"
)

// Splice replaces the text between the markers in doc with section.
func Splice(doc, section string) (string, error) {
	i := strings.Index(doc, BeginMarker)
	j := strings.Index(doc, EndMarker)
	if i < 0 || j < i {
		return "", errors.New("perfresult: the doc has no generated section (markers missing or out of order)")
	}
	return doc[:i+len(BeginMarker)] + "\n" + section + doc[j:], nil
}
