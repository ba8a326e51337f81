package cgroups

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PSI is one resource's pressure stall information, from a cgroup v2
// directory's cpu.pressure, memory.pressure or io.pressure: the share of
// time some (or all, "full") of the cgroup's tasks waited for it.
type PSI struct {
	Some, Full PSIData
}

// PSIData is one line of a pressure file. Total is in nanoseconds, the
// unit the CRI's PsiData names (the kernel counts microseconds).
type PSIData struct {
	Total                uint64
	Avg10, Avg60, Avg300 float64 // percent
}

// Swap is a cgroup v2 directory's swap use and limit.
type Swap struct {
	Usage uint64 // memory.swap.current
	Limit uint64 // memory.swap.max; 0 when unlimited
}

// readPSI reads a pressure file; nil where there is none: a kernel without
// PSI (CONFIG_PSI, psi=0, as in the UML guest), or a cgroup whose
// cgroup.pressure is 0, or a v1 host. cpu.pressure's "full" line is all
// zeros on kernels before 5.13, as it is in the file.
func readPSI(file string) *PSI {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var p PSI
	seen := false
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		var d *PSIData
		switch fields[0] {
		case "some":
			d = &p.Some
		case "full":
			d = &p.Full
		default:
			continue
		}
		seen = true
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "total":
				n, _ := strconv.ParseUint(v, 10, 64)
				d.Total = n * 1000
			case "avg10":
				d.Avg10, _ = strconv.ParseFloat(v, 64)
			case "avg60":
				d.Avg60, _ = strconv.ParseFloat(v, 64)
			case "avg300":
				d.Avg300, _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	if !seen {
		return nil
	}
	return &p
}

// readV2Only reads what only cgroup v2 has: the pressure of CPU, memory
// and I/O, and swap (nil without memory.swap.current: no swap accounting).
func readV2Only(dir string, s *Stats) {
	s.CPUPressure = readPSI(filepath.Join(dir, "cpu.pressure"))
	s.MemoryPressure = readPSI(filepath.Join(dir, "memory.pressure"))
	s.IOPressure = readPSI(filepath.Join(dir, "io.pressure"))
	if used, err := readUint(filepath.Join(dir, "memory.swap.current")); err == nil {
		sw := &Swap{Usage: used}
		if l, err := readUint(filepath.Join(dir, "memory.swap.max")); err == nil && l < unlimited {
			sw.Limit = l
		}
		s.Swap = sw
	}
}
