package cgroups

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadDetail: the same numbers from v1's per-controller files and v2's
// unified ones, in the units cAdvisor reports (nanoseconds, bytes, shares).
func TestReadDetail(t *testing.T) {
	want := Detail{
		CFSPeriods: 10, CFSThrottledPeriods: 4, CFSThrottledNanos: 3_000_000,
		UserNanos: 5_000_000, SystemNanos: 6_000_000,
		Cache: 4096, MappedFile: 1024, Swap: 8192, KernelUsage: 2048,
		Failcnt: 2, MaxUsage: 65536, OOMKills: 1,
		CPUPeriod: 100000, CPUQuota: 20000, CPUShares: 1024,
		SwapLimit: 64 << 20,
		Threads:   3, ThreadsMax: 100,
		Procs: []int{11, 12},
		IO:    []DeviceIO{{Major: 8, Minor: 0, ReadBytes: 512, WriteBytes: 1024, Reads: 2, Writes: 3}},
	}

	v1 := t.TempDir()
	writeFiles(t, v1, map[string]string{
		"cpu/cpu.stat":                                    "nr_periods 10\nnr_throttled 4\nthrottled_time 3000000\n",
		"cpu/cpu.cfs_period_us":                           "100000\n",
		"cpu/cpu.cfs_quota_us":                            "20000\n",
		"cpu/cpu.shares":                                  "1024\n",
		"cpuacct/cpuacct.usage_user":                      "5000000\n",
		"cpuacct/cpuacct.usage_sys":                       "6000000\n",
		"memory/memory.stat":                              "cache 1\ntotal_cache 4096\ntotal_mapped_file 1024\ntotal_swap 8192\n",
		"memory/memory.failcnt":                           "2\n",
		"memory/memory.max_usage_in_bytes":                "65536\n",
		"memory/memory.kmem.usage_in_bytes":               "2048\n",
		"memory/memory.oom_control":                       "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
		"memory/memory.soft_limit_in_bytes":               "9223372036854771712\n", // unlimited
		"memory/memory.memsw.limit_in_bytes":              "67108864\n",
		"memory/cgroup.procs":                             "11\n12\n",
		"pids/pids.current":                               "3\n",
		"pids/pids.max":                                   "100\n",
		"blkio/blkio.throttle.io_service_bytes_recursive": "8:0 Read 512\n8:0 Write 1024\n8:0 Total 1536\nTotal 1536\n",
		"blkio/blkio.throttle.io_serviced_recursive":      "8:0 Read 2\n8:0 Write 3\n8:0 Total 5\nTotal 5\n",
	})
	paths := map[string]string{}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio"} {
		paths[c] = filepath.Join(v1, c)
	}
	if got := ReadDetail(paths); !reflect.DeepEqual(got, want) {
		t.Errorf("v1:\n got %+v\nwant %+v", got, want)
	}

	v2 := t.TempDir()
	writeFiles(t, v2, map[string]string{
		"cpu.stat":            "usage_usec 11000\nuser_usec 5000\nsystem_usec 6000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 3000\n",
		"cpu.max":             "20000 100000\n",
		"cpu.weight":          "39\n", // what runc writes for 1024 shares
		"memory.stat":         "anon 1\nfile 4096\nfile_mapped 1024\nkernel 2048\n",
		"memory.swap.current": "8192\n",
		"memory.events":       "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
		"memory.peak":         "65536\n",
		"memory.low":          "0\n",
		"memory.swap.max":     "67108864\n",
		"pids.current":        "3\n",
		"pids.max":            "100\n",
		"cgroup.procs":        "11\n12\n",
		"io.stat":             "8:0 rbytes=512 wbytes=1024 rios=2 wios=3 dbytes=0 dios=0\n",
	})
	got := ReadDetail(map[string]string{"": v2})
	// 39 → shares is not exactly 1024 (the mapping rounds).
	if got.CPUShares < 990 || got.CPUShares > 1050 {
		t.Errorf("v2 shares from weight 39: %d", got.CPUShares)
	}
	got.CPUShares = want.CPUShares
	if !reflect.DeepEqual(got, want) {
		t.Errorf("v2:\n got %+v\nwant %+v", got, want)
	}

	// Missing files leave zeros, "max" limits read as none.
	empty := t.TempDir()
	writeFiles(t, empty, map[string]string{"cpu.max": "max 100000\n", "pids.max": "max\n"})
	if got := ReadDetail(map[string]string{"": empty}); got.CPUQuota != 0 || got.CPUPeriod != 100000 || got.ThreadsMax != 0 {
		t.Errorf("unlimited: %+v", got)
	}
}

// TestReadDetailLive reads the test process's own cgroup: the kernel's real
// files (v1 on the lab host, v2 in make test-cgroupv2's guest) parse into
// the process itself and a CPU time it has used.
func TestReadDetailLive(t *testing.T) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip(err)
	}
	paths := map[string]string{}
	_, statErr := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if statErr == nil && parts[0] == "0" { // pure v2
			paths = map[string]string{"": filepath.Join("/sys/fs/cgroup", parts[2])}
			break
		}
		for _, c := range strings.Split(parts[1], ",") {
			if dir := filepath.Join("/sys/fs/cgroup", c, parts[2]); c != "" && pathExists(dir) {
				paths[c] = dir
			}
		}
	}
	if len(paths) == 0 {
		t.Skip("no cgroup of this process found under /sys/fs/cgroup")
	}
	for i := 0; i < 3e7; i++ { // some CPU time for the counters
		_ = i * i
	}
	d := ReadDetail(paths)
	if dir, ok := paths[""]; ok || paths["memory"] != "" {
		if !ok {
			dir = paths["memory"]
		}
		if pathExists(filepath.Join(dir, "cgroup.procs")) && !slices.Contains(d.Procs, os.Getpid()) {
			t.Errorf("cgroup.procs of %s: %v, without this process %d", dir, d.Procs, os.Getpid())
		}
	}
	if d.UserNanos+d.SystemNanos == 0 {
		t.Errorf("no CPU time read from %v: %+v", paths, d)
	}
	t.Logf("%v: %+v", paths, d)
}

func pathExists(p string) bool { _, err := os.Stat(p); return err == nil }
