package cgroups

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReadStatsV2Only: the pressure and swap files of a v2 directory, as
// the kernel writes them, and their absence (a kernel without PSI, no
// swap accounting), which must leave the fields nil, not zero.
func TestReadStatsV2Only(t *testing.T) {
	write := func(dir string, files map[string]string) {
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	base := map[string]string{"cpu.stat": "usage_usec 5\n", "memory.current": "4096\n", "memory.stat": "anon 1\n", "memory.max": "max\n"}

	full := t.TempDir()
	write(full, base)
	write(full, map[string]string{
		"cpu.pressure":        "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"memory.pressure":     "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
		"io.pressure":         "some avg10=12.00 avg60=3.00 avg300=1.00 total=99\nfull avg10=10.00 avg60=2.00 avg300=0.50 total=88\n",
		"memory.swap.current": "8192\n",
		"memory.swap.max":     "65536\n",
	})
	s, err := ReadStats(map[string]string{"": full})
	if err != nil {
		t.Fatal(err)
	}
	want := PSI{Some: PSIData{Total: 1234000, Avg10: 1.5, Avg60: 0.25}}
	if s.CPUPressure == nil || *s.CPUPressure != want {
		t.Errorf("cpu pressure %+v, want %+v", s.CPUPressure, want)
	}
	if s.MemoryPressure == nil || s.MemoryPressure.Some.Total != 7000 || s.MemoryPressure.Full.Total != 3000 {
		t.Errorf("memory pressure %+v", s.MemoryPressure)
	}
	if s.IOPressure == nil || s.IOPressure.Full != (PSIData{Total: 88000, Avg10: 10, Avg60: 2, Avg300: 0.5}) {
		t.Errorf("io pressure %+v", s.IOPressure)
	}
	if s.Swap == nil || *s.Swap != (Swap{Usage: 8192, Limit: 65536}) {
		t.Errorf("swap %+v", s.Swap)
	}

	none := t.TempDir()
	write(none, base)
	s, err = ReadStats(map[string]string{"": none})
	if err != nil {
		t.Fatal(err)
	}
	if s.CPUPressure != nil || s.MemoryPressure != nil || s.IOPressure != nil || s.Swap != nil {
		t.Errorf("without the files: %+v %+v %+v %+v, want all nil", s.CPUPressure, s.MemoryPressure, s.IOPressure, s.Swap)
	}
	write(none, map[string]string{"memory.swap.current": "0\n", "memory.swap.max": "max\n"})
	if s, _ = ReadStats(map[string]string{"": none}); s.Swap == nil || *s.Swap != (Swap{}) {
		t.Errorf("unlimited swap: %+v", s.Swap)
	}
}
