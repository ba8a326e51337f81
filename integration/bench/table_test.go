package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// table collects p50/p99 (or single values) per row and runtime, in the
// order rows were first added, and prints them with the ratio of the first
// runtime to the second.
type table struct {
	runtimes [2]string
	rows     []string
	cells    map[string]map[string]cell
}

type cell struct {
	n        int
	p50, p99 float64 // ms for latencies; the value itself (p99 < 0) for single values
}

func newTable(a, b string) *table {
	return &table{runtimes: [2]string{a, b}, cells: map[string]map[string]cell{}}
}

func (t *table) row(name string) map[string]cell {
	if t.cells[name] == nil {
		t.cells[name] = map[string]cell{}
		t.rows = append(t.rows, name)
	}
	return t.cells[name]
}

// add records latency samples; p50/p99 by the nearest-rank rule
// (critest's run-benchmark.sh: sorted[(n-1)*p]).
func (t *table) add(name, runtime string, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	pct := func(p float64) float64 { return float64(s[int(float64(len(s)-1)*p)]) / float64(time.Millisecond) }
	t.row(name)[runtime] = cell{n: len(s), p50: pct(0.5), p99: pct(0.99)}
}

// value records a single figure (seconds, KiB, ...).
func (t *table) value(name, runtime string, v float64) {
	t.row(name)[runtime] = cell{n: 1, p50: v, p99: -1}
}

func (t *table) String() string {
	var b strings.Builder
	a, c := t.runtimes[0], t.runtimes[1]
	fmt.Fprintf(&b, "%-52s %4s %9s %9s %10s %10s %7s %7s\n", "operation (ms unless named)", "n", a+" p50", "p99", c+" p50", "p99", "p50 x", "p99 x")
	num := func(v float64) string {
		switch {
		case v < 0:
			return "-"
		case v >= 100:
			return fmt.Sprintf("%.0f", v)
		case v >= 10:
			return fmt.Sprintf("%.1f", v)
		}
		return fmt.Sprintf("%.2f", v)
	}
	ratio := func(x, y float64) string {
		if x < 0 || y <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x/y)
	}
	for _, name := range t.rows {
		pa, pc := t.cells[name][a], t.cells[name][c]
		n := max(pa.n, pc.n)
		if pa.n == 0 {
			pa = cell{p50: -1, p99: -1}
		}
		if pc.n == 0 {
			pc = cell{p50: -1, p99: -1}
		}
		fmt.Fprintf(&b, "%-52s %4d %9s %9s %10s %10s %7s %7s\n", name, n, num(pa.p50), num(pa.p99), num(pc.p50), num(pc.p99),
			ratio(pa.p50, pc.p50), ratio(pa.p99, pc.p99))
	}
	return b.String()
}
