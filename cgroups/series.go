package cgroups

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Detail is what a cgroup tells beyond Stats: the numbers behind the
// cAdvisor series that the CRI metrics RPCs carry (ListPodSandboxMetrics).
// It is read only for those RPCs, not for every stats call. A number the
// kernel does not offer stays zero.
type Detail struct {
	// CPU bandwidth control (cpu.stat) and the split of CPU time.
	CFSPeriods, CFSThrottledPeriods, CFSThrottledNanos uint64
	UserNanos, SystemNanos                             uint64

	// Memory beyond usage and working set.
	Cache, MappedFile, Swap, KernelUsage uint64
	Failcnt, MaxUsage, OOMKills          uint64

	// The limits in force, as cAdvisor's container_spec_* report them:
	// 0 means none (quota, reservation, swap limit).
	CPUPeriod, CPUQuota, CPUShares uint64
	MemoryReservation, SwapLimit   uint64

	Threads, ThreadsMax uint64 // tasks in the cgroup; pids.max (0: unlimited)
	Procs               []int  // the cgroup's processes (cgroup.procs)
	IO                  []DeviceIO
}

// DeviceIO is one block device's I/O by the cgroup.
type DeviceIO struct {
	Major, Minor                         uint64
	ReadBytes, WriteBytes, Reads, Writes uint64
}

// ReadDetail reads the Detail of the cgroup whose directories are given (as
// for ReadStats). Files that are missing leave their numbers at zero: a
// kernel without swap accounting, a controller not mounted.
func ReadDetail(paths map[string]string) Detail {
	if dir, ok := paths[""]; ok && len(paths) == 1 {
		return detailV2(dir)
	}
	return detailV1(paths)
}

func detailV2(dir string) Detail {
	var d Detail
	f := func(name string) string { return filepath.Join(dir, name) }
	cpu, _ := readFlat(f("cpu.stat"))
	d.CFSPeriods, d.CFSThrottledPeriods = cpu["nr_periods"], cpu["nr_throttled"]
	d.CFSThrottledNanos = cpu["throttled_usec"] * 1000
	d.UserNanos, d.SystemNanos = cpu["user_usec"]*1000, cpu["system_usec"]*1000
	if quota, period, ok := readCPUMax(f("cpu.max")); ok {
		d.CPUQuota, d.CPUPeriod = quota, period
	}
	if w, err := readUint(f("cpu.weight")); err == nil && w > 0 {
		// The inverse of the shares→weight mapping runc and the kubelet use.
		d.CPUShares = 2 + (w-1)*262142/9999
	}
	mem, _ := readFlat(f("memory.stat"))
	d.Cache, d.MappedFile = mem["file"], mem["file_mapped"]
	d.KernelUsage = mem["kernel"]
	if d.KernelUsage == 0 { // before 5.18 there is no "kernel" key
		d.KernelUsage = mem["kernel_stack"] + mem["pagetables"] + mem["sock"] + mem["vmalloc"] + mem["slab"]
	}
	d.Swap, _ = readUint(f("memory.swap.current"))
	ev, _ := readFlat(f("memory.events"))
	d.Failcnt, d.OOMKills = ev["max"], ev["oom_kill"]
	d.MaxUsage, _ = readUint(f("memory.peak"))
	d.MemoryReservation = limitOrZero(f("memory.low"))
	d.SwapLimit = limitOrZero(f("memory.swap.max"))
	d.Threads, _ = readUint(f("pids.current"))
	d.ThreadsMax = limitOrZero(f("pids.max"))
	d.Procs = readProcs(f("cgroup.procs"))
	d.IO = readIOStat(f("io.stat"))
	return d
}

func detailV1(paths map[string]string) Detail {
	var d Detail
	if dir, ok := paths["cpu"]; ok {
		cpu, _ := readFlat(filepath.Join(dir, "cpu.stat"))
		d.CFSPeriods, d.CFSThrottledPeriods = cpu["nr_periods"], cpu["nr_throttled"]
		d.CFSThrottledNanos = cpu["throttled_time"]
		d.CPUPeriod, _ = readUint(filepath.Join(dir, "cpu.cfs_period_us"))
		if q, err := readInt(filepath.Join(dir, "cpu.cfs_quota_us")); err == nil && q > 0 {
			d.CPUQuota = uint64(q)
		}
		d.CPUShares, _ = readUint(filepath.Join(dir, "cpu.shares"))
	}
	if dir, ok := paths["cpuacct"]; ok {
		d.UserNanos, _ = readUint(filepath.Join(dir, "cpuacct.usage_user"))
		d.SystemNanos, _ = readUint(filepath.Join(dir, "cpuacct.usage_sys"))
	}
	if dir, ok := paths["memory"]; ok {
		f := func(name string) string { return filepath.Join(dir, name) }
		mem, _ := readFlat(f("memory.stat"))
		d.Cache, d.MappedFile, d.Swap = mem["total_cache"], mem["total_mapped_file"], mem["total_swap"]
		d.Failcnt, _ = readUint(f("memory.failcnt"))
		d.MaxUsage, _ = readUint(f("memory.max_usage_in_bytes"))
		d.KernelUsage, _ = readUint(f("memory.kmem.usage_in_bytes"))
		oom, _ := readFlat(f("memory.oom_control"))
		d.OOMKills = oom["oom_kill"]
		d.MemoryReservation = limitOrZero(f("memory.soft_limit_in_bytes"))
		d.SwapLimit = limitOrZero(f("memory.memsw.limit_in_bytes"))
		d.Procs = readProcs(f("cgroup.procs"))
	}
	if dir, ok := paths["pids"]; ok {
		d.Threads, _ = readUint(filepath.Join(dir, "pids.current"))
		d.ThreadsMax = limitOrZero(filepath.Join(dir, "pids.max"))
	}
	if dir, ok := paths["blkio"]; ok {
		d.IO = readBlkio(filepath.Join(dir, "blkio.throttle.io_service_bytes_recursive"),
			filepath.Join(dir, "blkio.throttle.io_serviced_recursive"))
	}
	return d
}

// limitOrZero reads a limit file; "max" and v1's page-counter maximum mean
// no limit, reported as 0 as cAdvisor does.
func limitOrZero(file string) uint64 {
	v, err := readUint(file)
	if err != nil || v >= unlimited {
		return 0
	}
	return v
}

func readInt(file string) (int64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// readCPUMax reads cgroup v2's "quota period" (quota "max": none).
func readCPUMax(file string) (quota, period uint64, ok bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, 0, false
	}
	q, p, found := strings.Cut(strings.TrimSpace(string(data)), " ")
	if !found {
		return 0, 0, false
	}
	period, err = strconv.ParseUint(p, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	quota, _ = strconv.ParseUint(q, 10, 64) // "max" leaves 0
	return quota, period, true
}

func readProcs(file string) []int {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []int
	for _, l := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(l); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// readIOStat parses v2's io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...".
func readIOStat(file string) []DeviceIO {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []DeviceIO
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		d, ok := parseDevice(fields[0])
		if !ok {
			continue
		}
		for _, kv := range fields[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.Reads = n
			case "wios":
				d.Writes = n
			}
		}
		out = append(out, d)
	}
	return out
}

// readBlkio merges v1's "MAJ:MIN Op N" files for bytes and operations.
func readBlkio(bytesFile, opsFile string) []DeviceIO {
	byDev := map[[2]uint64]*DeviceIO{}
	var order []*DeviceIO
	read := func(file string, set func(d *DeviceIO, op string, n uint64)) {
		data, err := os.ReadFile(file)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue // the "Total N" line
			}
			d, ok := parseDevice(f[0])
			if !ok {
				continue
			}
			key := [2]uint64{d.Major, d.Minor}
			if byDev[key] == nil {
				byDev[key] = &d
				order = append(order, &d)
			}
			n, _ := strconv.ParseUint(f[2], 10, 64)
			set(byDev[key], f[1], n)
		}
	}
	read(bytesFile, func(d *DeviceIO, op string, n uint64) {
		switch op {
		case "Read":
			d.ReadBytes = n
		case "Write":
			d.WriteBytes = n
		}
	})
	read(opsFile, func(d *DeviceIO, op string, n uint64) {
		switch op {
		case "Read":
			d.Reads = n
		case "Write":
			d.Writes = n
		}
	})
	out := make([]DeviceIO, 0, len(order))
	for _, d := range order {
		out = append(out, *d)
	}
	return out
}

func parseDevice(s string) (DeviceIO, bool) {
	ma, mi, ok := strings.Cut(s, ":")
	if !ok {
		return DeviceIO{}, false
	}
	major, err1 := strconv.ParseUint(ma, 10, 64)
	minor, err2 := strconv.ParseUint(mi, 10, 64)
	return DeviceIO{Major: major, Minor: minor}, err1 == nil && err2 == nil
}
