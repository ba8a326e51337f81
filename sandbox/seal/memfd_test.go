package seal

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/opencontainers/runc/libcontainer/exeseal"
)

// TestMemfd: a binary copied into a sealed memfd runs from it, cannot be
// written (not even by root, not through a new open), and carries the
// seals libcontainer requires to run its init from /proc/self/exe without
// a copy (exeseal.IsCloned).
func TestMemfd(t *testing.T) {
	data, err := os.ReadFile("/bin/echo")
	if err != nil {
		t.Skip("no /bin/echo:", err)
	}
	f, err := Memfd("peapod-test", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !exeseal.IsCloned(f) {
		t.Error("libcontainer does not take the memfd as a sealed clone")
	}
	path := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if _, err := f.WriteAt([]byte{0}, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("write to the memfd: %v, want EPERM", err)
	}
	if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		_, err = w.Write([]byte{0})
		w.Close()
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("write through a new open: %v, want EPERM", err)
		}
	}
	if err := f.Truncate(1); err == nil {
		t.Error("the memfd could be shrunk")
	}
	out, err := exec.Command(path, "from-the-memfd").Output()
	if err != nil || string(out) != "from-the-memfd\n" {
		t.Fatalf("run from the memfd: %q, %v", out, err)
	}
	// A size that does not match what was copied is refused.
	if g, err := Memfd("peapod-test", bytes.NewReader(data), int64(len(data))+1); err == nil {
		g.Close()
		t.Error("a short copy was sealed")
	}
}
