package seal

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/runc/libcontainer/exeseal"
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
		if got := Overlaps(filepath.Join(dir, tc.exe), filepath.Join(dir, tc.root)); got != tc.want {
			t.Errorf("Overlaps(%s, %s) = %v, want %v", tc.exe, tc.root, got, tc.want)
		}
	}
}

// TestSealBinary: the exec helper's handle runs the binary and cannot be
// written through, whether it comes from the overlayfs or, where the layers
// overlap, from a sealed copy.
func TestSealBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlayfs through fsopen)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(bin, "tool")
	echo, err := os.ReadFile("/bin/echo")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, echo, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, empty := range map[string]string{
		"overlay":                   filepath.Join(dir, "state", "exec-seal"),
		"copy (overlapping layers)": filepath.Join(bin, "state", "exec-seal"),
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Binary(exe, empty)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if copied := exeseal.IsCloned(f); copied != (name != "overlay") {
				t.Errorf("sealed memfd copy: %v", copied)
			}
			path := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
			if out, err := exec.Command(path, "sealed-ok").Output(); err != nil || string(out) != "sealed-ok\n" {
				t.Errorf("run the sealed handle: %q %v", out, err)
			}
			if w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				_, werr := w.WriteString("tampered")
				w.Close()
				if werr == nil {
					t.Errorf("wrote through the sealed handle")
				}
			}
			if data, _ := os.ReadFile(exe); string(data) != string(echo) {
				t.Errorf("the binary changed")
			}
		})
	}
}
