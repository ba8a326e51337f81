package cgroups

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }
func mib(n int64) int64    { return n << 20 }
func str(v int64) string   { return strconv.FormatInt(v, 10) }
func itoa(v int64) string  { return strconv.FormatInt(v, 10) }

func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *runtimeapi.LinuxContainerResources
		swap bool
		want *specs.LinuxResources
	}{
		{"nil", nil, true, &specs.LinuxResources{}},
		{"empty", &runtimeapi.LinuxContainerResources{}, true, &specs.LinuxResources{}},
		{"cpu and memory", &runtimeapi.LinuxContainerResources{
			CpuShares: 512, CpuQuota: 20000, CpuPeriod: 100000, MemoryLimitInBytes: mib(32),
		}, true, &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(20000), Period: u64(100000)},
			Memory: &specs.LinuxMemory{Limit: i64(mib(32))},
		}},
		{"unlimited quota passes through", &runtimeapi.LinuxContainerResources{CpuQuota: -1}, true,
			&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(-1)}}},
		{"swap accounted", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mib(32), MemorySwapLimitInBytes: mib(64)}, true,
			&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(mib(32)), Swap: i64(mib(64))}}},
		{"swap not accounted", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mib(32), MemorySwapLimitInBytes: mib(64)}, false,
			&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(mib(32))}}},
		{"cpuset only", &runtimeapi.LinuxContainerResources{CpusetCpus: "0-1", CpusetMems: "0"}, true,
			&specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-1", Mems: "0"}}},
		{"hugepages and unified", &runtimeapi.LinuxContainerResources{
			HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: uint64(mib(4))}},
			Unified:        map[string]string{"memory.high": "1000000", "pids.max": "10"},
		}, true, &specs.LinuxResources{
			HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: uint64(mib(4))}},
			Unified:        map[string]string{"memory.high": "1000000", "pids.max": "10"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Limits(tc.in, tc.swap); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Limits = %s, want %s", dump(got), dump(tc.want))
			}
		})
	}
}

func TestPodLimits(t *testing.T) {
	res := &runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: mib(100)}
	overhead := &runtimeapi.LinuxContainerResources{CpuShares: 10, CpuQuota: 5000, CpuPeriod: 50000, MemoryLimitInBytes: mib(20)}
	for _, tc := range []struct {
		name          string
		res, overhead *runtimeapi.LinuxContainerResources
		want          *specs.LinuxResources
	}{
		{"none", nil, overhead, &specs.LinuxResources{}},
		{"no overhead", res, nil, &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Shares: u64(1024), Quota: i64(50000), Period: u64(100000)}, Memory: &specs.LinuxMemory{Limit: i64(mib(100))}}},
		{"overhead added, its quota rescaled to the pod's period", res, overhead, &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Shares: u64(1034), Quota: i64(60000), Period: u64(100000)}, Memory: &specs.LinuxMemory{Limit: i64(mib(120))}}},
		{"unlimited stays unlimited", &runtimeapi.LinuxContainerResources{CpuShares: 2}, overhead, &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Shares: u64(12)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodLimits(tc.res, tc.overhead, true); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("PodLimits = %s, want %s", dump(got), dump(tc.want))
			}
		})
	}
}

func TestMerge(t *testing.T) {
	cur := &specs.LinuxResources{
		CPU:            &specs.LinuxCPU{Shares: u64(2), Quota: i64(10000), Cpus: "0"},
		Memory:         &specs.LinuxMemory{Limit: i64(mib(32))},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1}, {Pagesize: "1GB", Limit: 2}},
		Unified:        map[string]string{"memory.high": "1", "pids.max": "5"},
		Devices:        []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	upd := Limits(&runtimeapi.LinuxContainerResources{
		CpuShares: 1024, MemoryLimitInBytes: mib(64),
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 3}},
		Unified:        map[string]string{"pids.max": "7"},
	}, true)
	want := &specs.LinuxResources{
		CPU:            &specs.LinuxCPU{Shares: u64(1024), Quota: i64(10000), Cpus: "0"},
		Memory:         &specs.LinuxMemory{Limit: i64(mib(64))},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 3}, {Pagesize: "1GB", Limit: 2}},
		Unified:        map[string]string{"memory.high": "1", "pids.max": "7"},
		Devices:        []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	before := dump(cur)
	if got := Merge(cur, upd); !reflect.DeepEqual(got, want) {
		t.Errorf("Merge = %s\nwant %s", dump(got), dump(want))
	}
	if dump(cur) != before {
		t.Errorf("Merge changed its input: %s", dump(cur))
	}
}

// fileCase is a CRI resource set and the cgroup files it must produce.
type fileCase struct {
	name string
	in   *runtimeapi.LinuxContainerResources
	v1   map[string]string // "controller/file" -> content
	v2   map[string]string
}

var fileCases = []fileCase{
	{
		name: "shares 2 (minimum)",
		in:   &runtimeapi.LinuxContainerResources{CpuShares: 2},
		v1:   map[string]string{"cpu/cpu.shares": "2"},
		v2:   map[string]string{"cpu.weight": "1"},
	},
	{
		name: "shares 1024 (default)",
		in:   &runtimeapi.LinuxContainerResources{CpuShares: 1024},
		v1:   map[string]string{"cpu/cpu.shares": "1024"},
		v2:   map[string]string{"cpu.weight": "100"},
	},
	{
		name: "shares 262144 (maximum)",
		in:   &runtimeapi.LinuxContainerResources{CpuShares: 262144},
		v1:   map[string]string{"cpu/cpu.shares": "262144"},
		v2:   map[string]string{"cpu.weight": "10000"},
	},
	{
		name: "shares 512 (quadratic conversion, not the linear one)",
		in:   &runtimeapi.LinuxContainerResources{CpuShares: 512},
		v1:   map[string]string{"cpu/cpu.shares": "512"},
		v2:   map[string]string{"cpu.weight": "59"},
	},
	{
		name: "quota and period",
		in:   &runtimeapi.LinuxContainerResources{CpuQuota: 20000, CpuPeriod: 100000},
		v1:   map[string]string{"cpu/cpu.cfs_quota_us": "20000", "cpu/cpu.cfs_period_us": "100000"},
		v2:   map[string]string{"cpu.max": "20000 100000"},
	},
	{
		name: "unlimited quota",
		in:   &runtimeapi.LinuxContainerResources{CpuQuota: -1, CpuPeriod: 100000},
		v1:   map[string]string{"cpu/cpu.cfs_quota_us": "-1"},
		v2:   map[string]string{"cpu.max": "max 100000"},
	},
	{
		name: "memory",
		in:   &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mib(32)},
		v1:   map[string]string{"memory/memory.limit_in_bytes": str(mib(32))},
		v2:   map[string]string{"memory.max": str(mib(32))},
	},
	{
		name: "memory and swap (memory+swap on v1, swap alone on v2)",
		in:   &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mib(32), MemorySwapLimitInBytes: mib(96)},
		v1:   map[string]string{"memory/memory.limit_in_bytes": str(mib(32)), "memory/memory.memsw.limit_in_bytes": str(mib(96))},
		v2:   map[string]string{"memory.max": str(mib(32)), "memory.swap.max": str(mib(64))},
	},
	{
		name: "no swap: swap limit equal to memory",
		in:   &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mib(32), MemorySwapLimitInBytes: mib(32)},
		v1:   map[string]string{"memory/memory.memsw.limit_in_bytes": str(mib(32))},
		v2:   map[string]string{"memory.swap.max": "0"},
	},
	{
		name: "cpuset",
		in:   &runtimeapi.LinuxContainerResources{CpusetCpus: "0-1", CpusetMems: "0"},
		v1:   map[string]string{"cpuset/cpuset.cpus": "0-1", "cpuset/cpuset.mems": "0"},
		v2:   map[string]string{"cpuset.cpus": "0-1", "cpuset.mems": "0"},
	},
	{
		name: "hugepages",
		in:   &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: uint64(mib(8))}}},
		v1:   map[string]string{"hugetlb/hugetlb.2MB.limit_in_bytes": str(mib(8))},
		v2:   map[string]string{"hugetlb.2MB.max": str(mib(8))},
	},
	{
		name: "unified passthrough (v2 only)",
		in:   &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": str(mib(16)), "pids.max": "42"}},
		v2:   map[string]string{"memory.high": str(mib(16)), "pids.max": "42"},
	},
}

// TestFilesV2 writes each translation with the cgroup v2 writer that
// libcontainer uses, into a fake cgroup directory, and checks the files.
func TestFilesV2(t *testing.T) {
	ocgroups.TestMode = true
	defer func() { ocgroups.TestMode = false }()
	for _, tc := range fileCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "cgroup.controllers", "cpuset cpu io memory hugetlb pids")
			write(t, dir, "memory.max", "max")
			cg, err := libcontainerCgroup("/test", Limits(tc.in, true))
			if err != nil {
				t.Fatal(err)
			}
			m, err := fs2.NewManager(cg, dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Set(cg.Resources); err != nil {
				t.Fatal(err)
			}
			checkFiles(t, dir, tc.v2)
		})
	}
}

// TestFilesV1 does the same with libcontainer's v1 writers.
func TestFilesV1(t *testing.T) {
	ocgroups.TestMode = true
	defer func() { ocgroups.TestMode = false }()
	for _, tc := range fileCases {
		if tc.v1 == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			paths := map[string]string{}
			for _, c := range []string{"cpu", "cpuset", "memory", "hugetlb", "pids"} {
				paths[c] = filepath.Join(root, c)
				if err := os.Mkdir(paths[c], 0o755); err != nil {
					t.Fatal(err)
				}
			}
			write(t, paths["memory"], "memory.limit_in_bytes", "9223372036854771712")
			write(t, paths["memory"], "memory.memsw.limit_in_bytes", "9223372036854771712")
			cg, err := libcontainerCgroup("/test", Limits(tc.in, true))
			if err != nil {
				t.Fatal(err)
			}
			m, err := fs.NewManager(cg, paths)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Set(cg.Resources); err != nil {
				t.Fatal(err)
			}
			checkFiles(t, root, tc.v1)
		})
	}
}

func TestReadStats(t *testing.T) {
	v2 := t.TempDir()
	write(t, v2, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
	write(t, v2, "memory.current", "10000\n")
	write(t, v2, "memory.stat", "anon 4000\nfile 6000\ninactive_file 2500\npgfault 77\npgmajfault 3\n")
	write(t, v2, "memory.max", "max\n")
	write(t, v2, "pids.current", "4\n")
	got, err := ReadStats(map[string]string{"": v2})
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{CPUUsageNanos: 1500000, MemoryUsage: 10000, WorkingSet: 7500, RSS: 4000, PageFaults: 77, MajorPageFaults: 3, Pids: 4}
	if got != want {
		t.Errorf("v2: got %+v, want %+v", got, want)
	}

	v1 := t.TempDir()
	for _, c := range []string{"cpuacct", "memory", "pids"} {
		os.Mkdir(filepath.Join(v1, c), 0o755)
	}
	write(t, v1, "cpuacct/cpuacct.usage", "123456789\n")
	write(t, v1, "memory/memory.usage_in_bytes", "20000\n")
	write(t, v1, "memory/memory.stat", "rss 1\ntotal_rss 8000\ntotal_inactive_file 30000\ntotal_pgfault 9\ntotal_pgmajfault 1\nhierarchical_memory_limit 33554432\n")
	write(t, v1, "pids/pids.current", "2\n")
	got, err = ReadStats(map[string]string{
		"cpuacct": filepath.Join(v1, "cpuacct"), "cpu": filepath.Join(v1, "cpuacct"),
		"memory": filepath.Join(v1, "memory"), "pids": filepath.Join(v1, "pids"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want = Stats{CPUUsageNanos: 123456789, MemoryUsage: 20000, WorkingSet: 0, RSS: 8000, PageFaults: 9, MajorPageFaults: 1, MemoryLimit: 33554432, Pids: 2}
	if got != want {
		t.Errorf("v1: got %+v, want %+v", got, want)
	}
	if _, err := ReadStats(map[string]string{"": filepath.Join(v2, "gone")}); err == nil {
		t.Error("stats of a missing cgroup: no error")
	}

	// A container's stats: the same without the process count.
	for name, paths := range map[string]map[string]string{
		"v2": {"": v2},
		"v1": {"cpuacct": filepath.Join(v1, "cpuacct"), "memory": filepath.Join(v1, "memory"), "pids": filepath.Join(v1, "pids")},
	} {
		all, err1 := ReadStats(paths)
		ctr, err2 := ReadContainerStats(paths)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v, %v", name, err1, err2)
		}
		if all.Pids == 0 || ctr.Pids != 0 {
			t.Errorf("%s: process count %d of ReadStats, %d of ReadContainerStats; want it in the first only", name, all.Pids, ctr.Pids)
		}
		all.Pids = 0
		if ctr != all {
			t.Errorf("%s: ReadContainerStats %+v, want ReadStats's %+v", name, ctr, all)
		}
	}
}

func write(t *testing.T, dir, file, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	for file, v := range want {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if got := strings.TrimSpace(string(data)); got != v {
			t.Errorf("%s = %q, want %q", file, got, v)
		}
	}
}

func dump(r *specs.LinuxResources) string {
	var b strings.Builder
	if r.CPU != nil {
		c := r.CPU
		b.WriteString("cpu{")
		if c.Shares != nil {
			b.WriteString(" shares=" + itoa(int64(*c.Shares)))
		}
		if c.Quota != nil {
			b.WriteString(" quota=" + itoa(*c.Quota))
		}
		if c.Period != nil {
			b.WriteString(" period=" + itoa(int64(*c.Period)))
		}
		b.WriteString(" cpus=" + c.Cpus + " mems=" + c.Mems + " } ")
	}
	if r.Memory != nil {
		b.WriteString("mem{")
		if r.Memory.Limit != nil {
			b.WriteString(" limit=" + itoa(*r.Memory.Limit))
		}
		if r.Memory.Swap != nil {
			b.WriteString(" swap=" + itoa(*r.Memory.Swap))
		}
		b.WriteString(" } ")
	}
	for _, h := range r.HugepageLimits {
		b.WriteString("huge{" + h.Pagesize + "=" + itoa(int64(h.Limit)) + "} ")
	}
	for _, k := range slices.Sorted(maps.Keys(r.Unified)) {
		b.WriteString(k + "=" + r.Unified[k] + " ")
	}
	return b.String()
}

// TestMergeKeepsSwapAllowance: a memory update without swap keeps the swap
// the container had on top of its memory (none stays none), so the v1
// kernel never sees memory+swap below memory.
func TestMergeKeepsSwapAllowance(t *testing.T) {
	for _, tc := range []struct {
		name               string
		limit, swap, upd   int64
		wantLimit, wantSwp int64
	}{
		{"no swap stays no swap", mib(64), mib(64), mib(96), mib(96), mib(96)},
		{"32 MiB of swap kept", mib(64), mib(96), mib(128), mib(128), mib(160)},
		{"lowered", mib(64), mib(64), mib(32), mib(32), mib(32)},
		{"memory unlimited", mib(64), mib(96), -1, -1, -1},
		{"swap unlimited stays", mib(64), -1, mib(96), mib(96), -1},
	} {
		cur := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(tc.limit), Swap: i64(tc.swap)}}
		got := Merge(cur, Limits(&runtimeapi.LinuxContainerResources{MemoryLimitInBytes: tc.upd}, true))
		if *got.Memory.Limit != tc.wantLimit || *got.Memory.Swap != tc.wantSwp {
			t.Errorf("%s: limit %d swap %d, want %d %d", tc.name, *got.Memory.Limit, *got.Memory.Swap, tc.wantLimit, tc.wantSwp)
		}
		if *cur.Memory.Swap != tc.swap {
			t.Errorf("%s: Merge changed its input", tc.name)
		}
	}
}
