package cgroups

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSliceOOMKilled: a kill counted in the pod slice after its scope is
// gone is reported once, for the next exit only; a slice first seen after a
// restart does not report the kills from before its baseline.
func TestSliceOOMKilled(t *testing.T) {
	events := func(dir string, n int) {
		data := []byte("low 0\nhigh 0\nmax 0\noom 0\noom_kill " + strconv.Itoa(n) + "\n")
		if err := os.WriteFile(filepath.Join(dir, "memory.events"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	made := t.TempDir()
	NoteSliceMade(made)
	events(made, 0)
	if sliceOOMKilled(filepath.Join(made, "cri-peapod-a.scope")) {
		t.Error("no kill counted, yet reported")
	}
	events(made, 1)
	if !sliceOOMKilled(filepath.Join(made, "cri-peapod-b.scope")) {
		t.Error("a kill counted after the last exit: not reported")
	}
	if sliceOOMKilled(filepath.Join(made, "cri-peapod-c.scope")) {
		t.Error("the same kill reported for a second exit")
	}
	fresh := t.TempDir()
	NoteSliceMade(fresh)
	events(fresh, 1)
	if !sliceOOMKilled(filepath.Join(fresh, "cri-peapod-d.scope")) {
		t.Error("a kill in a slice this daemon made, before any exit was accounted: not reported")
	}

	// A slice from before a restart, or one the daemon did not make: its
	// kills up to the first watch are old; a kill after it is new.
	old := t.TempDir()
	events(old, 2)
	if sliceOOMKilled(filepath.Join(old, "cri-peapod-e.scope")) {
		t.Error("a slice's kills from before a restart reported for a new exit")
	}
	foreign := t.TempDir()
	events(foreign, 3)
	noteSliceBaseline(foreign)
	events(foreign, 4)
	noteSliceBaseline(foreign) // a second container's watch keeps the baseline
	if !sliceOOMKilled(filepath.Join(foreign, "cri-peapod-f.scope")) {
		t.Error("a kill after the first watch in a slice the daemon did not make: not reported")
	}
	forgetSlice(foreign)
	if sliceOOMKilled(filepath.Join(foreign, "cri-peapod-g.scope")) {
		t.Error("a removed slice's accounting outlived it")
	}
}

// TestExitedScopeOOMKillsMidRemoval: a scope's counter read that meets
// systemd's removal half-way fails with ENODEV, not ENOENT; the kill must
// still be found in the pod slice (it was reported "Error" once in CI).
func TestExitedScopeOOMKillsMidRemoval(t *testing.T) {
	slice := t.TempDir()
	NoteSliceMade(slice)
	write := func(n int) {
		data := []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill " + strconv.Itoa(n) + "\n")
		if err := os.WriteFile(filepath.Join(slice, "memory.events"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1)
	for _, readErr := range []error{unix.ENODEV, os.ErrNotExist} {
		scope := filepath.Join(slice, "cri-peapod-"+readErr.Error()[:3]+".scope")
		n, err := exitedScopeOOMKills(scope, 0, &os.PathError{Op: "open", Path: scope + "/memory.events", Err: readErr})
		if err != nil || n != 1 {
			t.Errorf("read failed with %v and the slice counted a new kill: %d kills, %v; want 1", readErr, n, err)
		}
		write(2) // the next exit's kill
	}
	// The counter readable: it decides, and the slice's count is accounted
	// so that a later exit does not claim this kill.
	write(3)
	scope := filepath.Join(slice, "cri-peapod-readable.scope")
	if n, err := exitedScopeOOMKills(scope, 1, nil); err != nil || n != 1 {
		t.Errorf("readable counter 1: %d, %v", n, err)
	}
	if sliceOOMKilled(filepath.Join(slice, "cri-peapod-later.scope")) {
		t.Error("a kill already reported by its scope's own counter was reported again for a later exit")
	}
}
