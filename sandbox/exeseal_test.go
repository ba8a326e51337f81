package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

func TestExeSealOverlaps(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"bin", "state/runc", "binx", "run/peapod/runc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "state"), filepath.Join(dir, "bin", "st")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		exe, root string
		want      bool
	}{
		{"peapod", "state/runc", true},                 // the bench's old layout: state below the binary
		{"bin/peapod", "state/runc", false},            // separate directories
		{"binx/peapod", "bin", false},                  // a common prefix is not a parent
		{"run/peapod/peapod", "run/peapod/runc", true}, // binary above the state
		{"bin/peapod", "bin/st/runc", false},           // through a symlink: where it really is
		{"state/runc/peapod", "bin/st/runc", true},
	} {
		if got := exeSealOverlaps(filepath.Join(dir, tc.exe), filepath.Join(dir, tc.root)); got != tc.want {
			t.Errorf("exeSealOverlaps(%s, %s) = %v, want %v", tc.exe, tc.root, got, tc.want)
		}
	}
}
