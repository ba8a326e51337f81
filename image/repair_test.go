package image

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepairRecords: each record file that c/storage could not load is
// moved aside as <file>.corrupt-<time>; one it loads stays as it is, and
// so do absent files and lock files, whatever they hold.
func TestRepairRecords(t *testing.T) {
	layer := `[{"id":"0123","parent":"","created":"2026-12-06T22:00:00Z","compressed-diff-digest":"sha256:` + strings.Repeat("a", 64) + `"}]`
	cases := []struct {
		name, content string
		movedAside    bool
	}{
		{"none", "[]", false},
		{"one layer", layer, false},
		{"empty", "", true},
		{"truncated", layer[:len(layer)/2], true},
		{"garbage", "\x00\xff\x13garbage", true},
		{"not an array", `{"id":"0123"}`, true},
		{"a record without an ID", `[{"parent":"x"}]`, true},
		{"a null record", `[null]`, true},
		{"a field of the wrong type", `[{"id":"0123","created":5}]`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			graph, run := t.TempDir(), t.TempDir()
			layers := filepath.Join(graph, "overlay-layers", "layers.json")
			lock := filepath.Join(graph, "overlay-layers", "layers.lock")
			os.MkdirAll(filepath.Dir(layers), 0o700)
			if err := os.WriteFile(layers, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(lock, []byte("\x00\xffnot a token"), 0o600); err != nil {
				t.Fatal(err)
			}
			moved, err := repairRecords(graph, run, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			aside, _ := filepath.Glob(layers + ".corrupt-*")
			if !c.movedAside {
				if len(moved) != 0 || len(aside) != 0 {
					t.Fatalf("moved aside: %v (%v), want nothing", moved, aside)
				}
				if b, _ := os.ReadFile(layers); string(b) != c.content {
					t.Errorf("layers.json changed to %q", b)
				}
			} else {
				if len(moved) != 1 || moved[0].File != layers || len(aside) != 1 || moved[0].To != aside[0] {
					t.Fatalf("moved aside: %v (%v), want layers.json as %s.corrupt-<time>", moved, aside, layers)
				}
				if b, _ := os.ReadFile(aside[0]); string(b) != c.content {
					t.Errorf("the file moved aside holds %q, want the original", b)
				}
				if _, err := os.Stat(layers); !os.IsNotExist(err) {
					t.Errorf("layers.json still there: %v", err)
				}
				t.Logf("%s: %v", c.name, moved[0].Reason)
			}
			if _, err := os.Stat(lock); err != nil {
				t.Errorf("the lock file: %v", err)
			}
		})
	}
}

// TestRepairRecordsEveryFile: every record file of the graph and run roots
// is checked.
func TestRepairRecordsEveryFile(t *testing.T) {
	graph, run := t.TempDir(), t.TempDir()
	var want []string
	for _, rec := range storageRecords {
		p := filepath.Join(graph, rec.path)
		if rec.inRunRoot {
			p = filepath.Join(run, rec.path)
		}
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte("[{"), 0o600); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	moved, err := repairRecords(graph, run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range moved {
		got = append(got, m.File)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("moved aside:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
