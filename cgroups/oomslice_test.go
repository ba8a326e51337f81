package cgroups

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
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
