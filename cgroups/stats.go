package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stats are the numbers of one cgroup that the CRI stats RPCs report. They
// are read straight from the few files that hold them, on v1 and v2, so a
// stats call for many containers stays cheap.
type Stats struct {
	CPUUsageNanos   uint64 // cumulative CPU time, all cores
	MemoryUsage     uint64 // memory.current / memory.usage_in_bytes
	WorkingSet      uint64 // usage minus inactive file pages, as cAdvisor computes it
	RSS             uint64 // anonymous memory
	PageFaults      uint64
	MajorPageFaults uint64
	MemoryLimit     uint64 // 0 when unlimited
	Pids            uint64 // processes (and threads) in the cgroup

	// Only on cgroup v2 (pressure.go); nil where the kernel has none.
	CPUPressure, MemoryPressure, IOPressure *PSI
	Swap                                    *Swap
}

// unlimited is the smallest value v1 reports for "no memory limit"
// (PAGE_COUNTER_MAX rounded to pages); anything above means unlimited.
const unlimited = 1 << 62

// ReadStats reads the stats of the cgroup whose directories are given: one
// per v1 controller, or the unified directory under the key "". Controllers
// that are missing leave their numbers at zero.
func ReadStats(paths map[string]string) (Stats, error) { return readStats(paths, true) }

// ReadContainerStats is ReadStats without the process count (Pids stays
// 0), which a CRI ContainerStats does not carry: one file fewer per
// running container on every ListContainerStats of the kubelet's poll.
func ReadContainerStats(paths map[string]string) (Stats, error) { return readStats(paths, false) }

func readStats(paths map[string]string, pids bool) (Stats, error) {
	if dir, ok := paths[""]; ok && len(paths) == 1 {
		return readV2(dir, pids)
	}
	return readV1(paths, pids)
}

func readV2(dir string, pids bool) (Stats, error) {
	var s Stats
	cpu, err := readFlat(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return s, err // the cgroup is gone
	}
	s.CPUUsageNanos = cpu["usage_usec"] * 1000
	if v, err := readUint(filepath.Join(dir, "memory.current")); err == nil {
		s.MemoryUsage = v
		mem, _ := readFlat(filepath.Join(dir, "memory.stat"))
		s.WorkingSet = sub(v, mem["inactive_file"])
		s.RSS = mem["anon"]
		s.PageFaults = mem["pgfault"]
		s.MajorPageFaults = mem["pgmajfault"]
		if l, err := readUint(filepath.Join(dir, "memory.max")); err == nil && l < unlimited {
			s.MemoryLimit = l
		}
	}
	if pids {
		s.Pids, _ = readUint(filepath.Join(dir, "pids.current"))
	}
	readV2Only(dir, &s)
	return s, nil
}

func readV1(paths map[string]string, pids bool) (Stats, error) {
	var s Stats
	var errs []error
	if dir, ok := paths["cpuacct"]; ok {
		v, err := readUint(filepath.Join(dir, "cpuacct.usage"))
		s.CPUUsageNanos = v
		errs = append(errs, err)
	}
	if dir, ok := paths["memory"]; ok {
		v, err := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
		errs = append(errs, err)
		s.MemoryUsage = v
		mem, _ := readFlat(filepath.Join(dir, "memory.stat"))
		s.WorkingSet = sub(v, mem["total_inactive_file"])
		s.RSS = mem["total_rss"]
		s.PageFaults = mem["total_pgfault"]
		s.MajorPageFaults = mem["total_pgmajfault"]
		if l := mem["hierarchical_memory_limit"]; l < unlimited {
			s.MemoryLimit = l
		}
	}
	if dir, ok := paths["pids"]; ok && pids {
		s.Pids, _ = readUint(filepath.Join(dir, "pids.current"))
	}
	return s, errors.Join(errs...)
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func readUint(file string) (uint64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return unlimited, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// readFlat reads a flat-keyed file ("key value" lines) such as memory.stat.
func readFlat(file string) (map[string]uint64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, 64)
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}
