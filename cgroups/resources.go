package cgroups

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Limits translates the CRI resources of a container into OCI resources,
// which libcontainer writes to the v1 or v2 files. Zero means "not set", as
// in containerd; quota and memory may be -1 (unlimited). The swap limit is
// memory+swap as in the OCI spec and is dropped when the kernel does not
// account swap (swap false), as containerd does.
func Limits(res *runtimeapi.LinuxContainerResources, swap bool) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if res == nil {
		return out
	}
	var mem specs.LinuxMemory
	if v := res.MemoryLimitInBytes; v != 0 {
		mem.Limit = &v
	}
	if v := res.MemorySwapLimitInBytes; v != 0 && swap {
		mem.Swap = &v
	}
	if mem != (specs.LinuxMemory{}) {
		out.Memory = &mem
	}
	cpu := specs.LinuxCPU{Cpus: res.CpusetCpus, Mems: res.CpusetMems}
	if v := uint64(res.CpuShares); v != 0 {
		cpu.Shares = &v
	}
	if v := res.CpuQuota; v != 0 {
		cpu.Quota = &v
	}
	if v := uint64(res.CpuPeriod); v != 0 {
		cpu.Period = &v
	}
	if cpu.Shares != nil || cpu.Quota != nil || cpu.Period != nil || cpu.Cpus != "" || cpu.Mems != "" {
		out.CPU = &cpu
	}
	for _, h := range res.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.PageSize, Limit: h.Limit})
	}
	if len(res.Unified) > 0 {
		out.Unified = maps.Clone(res.Unified)
	}
	return out
}

// PodLimits are the limits of a pod's cgroup: the pod's resources (the sum
// of its containers' as kubelet computes them) plus the sandbox overhead.
// A dimension the pod leaves unlimited stays unlimited whatever the overhead.
func PodLimits(res, overhead *runtimeapi.LinuxContainerResources, swap bool) *specs.LinuxResources {
	out := Limits(res, swap)
	if res == nil || overhead == nil {
		return out
	}
	if m := out.Memory; m != nil {
		if m.Limit != nil && *m.Limit > 0 {
			*m.Limit += max(overhead.MemoryLimitInBytes, 0)
		}
		if m.Swap != nil && *m.Swap > 0 {
			*m.Swap += max(overhead.MemoryLimitInBytes, 0)
		}
	}
	if c := out.CPU; c != nil {
		if c.Shares != nil && overhead.CpuShares > 0 {
			*c.Shares += uint64(overhead.CpuShares)
		}
		if c.Quota != nil && *c.Quota > 0 && overhead.CpuQuota > 0 {
			// The overhead's quota, rescaled to the pod's period.
			period, oPeriod := int64(100000), int64(100000)
			if c.Period != nil {
				period = int64(*c.Period)
			}
			if overhead.CpuPeriod > 0 {
				oPeriod = overhead.CpuPeriod
			}
			*c.Quota += overhead.CpuQuota * period / oPeriod
		}
	}
	for i, h := range out.HugepageLimits {
		for _, o := range overhead.HugepageLimits {
			if o.PageSize == h.Pagesize {
				out.HugepageLimits[i].Limit += o.Limit
			}
		}
	}
	return out
}

// Merge applies an update to current resources: what the update sets
// replaces what was there; what it leaves unset stays (kubelet sends the
// whole set anyway). Unified keys and hugepage sizes are merged one by one.
func Merge(cur, upd *specs.LinuxResources) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if cur != nil {
		c := *cur
		out = &c
		if cur.Memory != nil {
			m := *cur.Memory
			out.Memory = &m
		}
		if cur.CPU != nil {
			p := *cur.CPU
			out.CPU = &p
		}
		out.HugepageLimits = slices.Clone(cur.HugepageLimits)
		out.Unified = maps.Clone(cur.Unified)
	}
	if upd == nil {
		return out
	}
	if m := upd.Memory; m != nil {
		if out.Memory == nil {
			out.Memory = &specs.LinuxMemory{}
		}
		if m.Limit != nil && m.Swap == nil {
			out.Memory.Swap = keepSwapAllowance(out.Memory.Limit, out.Memory.Swap, *m.Limit)
		}
		if m.Limit != nil {
			out.Memory.Limit = m.Limit
		}
		if m.Swap != nil {
			out.Memory.Swap = m.Swap
		}
	}
	if c := upd.CPU; c != nil {
		if out.CPU == nil {
			out.CPU = &specs.LinuxCPU{}
		}
		if c.Shares != nil {
			out.CPU.Shares = c.Shares
		}
		if c.Quota != nil {
			out.CPU.Quota = c.Quota
		}
		if c.Period != nil {
			out.CPU.Period = c.Period
		}
		if c.Cpus != "" {
			out.CPU.Cpus = c.Cpus
		}
		if c.Mems != "" {
			out.CPU.Mems = c.Mems
		}
	}
	for _, h := range upd.HugepageLimits {
		i := slices.IndexFunc(out.HugepageLimits, func(o specs.LinuxHugepageLimit) bool { return o.Pagesize == h.Pagesize })
		if i >= 0 {
			out.HugepageLimits[i] = h
		} else {
			out.HugepageLimits = append(out.HugepageLimits, h)
		}
	}
	if len(upd.Unified) > 0 {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		maps.Copy(out.Unified, upd.Unified)
	}
	if upd.Pids != nil {
		out.Pids = upd.Pids
	}
	return out
}

// keepSwapAllowance is the memory+swap limit after the memory limit
// changes to limit while the update leaves swap alone: the swap the
// container had on top of its memory is kept. Kept as it was, a memory+swap
// limit below the new memory limit would be refused by the kernel (v1) or
// silently change the swap (v2).
func keepSwapAllowance(oldLimit, oldSwap *int64, limit int64) *int64 {
	if oldSwap == nil || *oldSwap <= 0 || oldLimit == nil || *oldLimit <= 0 {
		return oldSwap // none, or unlimited
	}
	if limit <= 0 {
		v := int64(-1) // memory unlimited: memory+swap too
		return &v
	}
	v := limit + max(*oldSwap-*oldLimit, 0)
	return &v
}

// SwapAccounted reports whether the kernel accounts swap for peapod's
// cgroups (memory.memsw.* on v1, memory.swap.max on v2); without it a swap
// limit cannot be applied and is left out.
func SwapAccounted() bool {
	if ocgroups.IsCgroup2UnifiedMode() {
		own, err := ocgroups.ParseCgroupFile("/proc/self/cgroup")
		if err != nil {
			return false
		}
		if ownPath := own[""]; ownPath != "" && ownPath != "/" {
			_, err := os.Stat(filepath.Join("/sys/fs/cgroup", ownPath, "memory.swap.max"))
			return err == nil
		}
		// The root cgroup has no memory.* files: look at any child.
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/memory.swap.max")
		return len(dirs) > 0
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
}

// hugetlbAvailable reports whether the hugetlb controller is there: on v1
// mounted, on v2 enabled at the root.
var hugetlbAvailable = sync.OnceValue(func() bool {
	if ocgroups.IsCgroup2UnifiedMode() {
		ctrls, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		return err == nil && slices.Contains(strings.Fields(string(ctrls)), "hugetlb")
	}
	_, err := ocgroups.FindCgroupMountpoint("", "hugetlb")
	return err == nil
})

// TolerateMissingHugetlb drops the hugepage limits of r when the host has
// no hugetlb controller, as containerd does (tolerate_missing_hugetlb_
// controller): the kubelet sends a limit for every page size the machine
// has, and libcontainer fails a start that cannot apply one.
func TolerateMissingHugetlb(r *specs.LinuxResources) *specs.LinuxResources {
	if r != nil && !hugetlbAvailable() {
		r.HugepageLimits = nil
	}
	return r
}

// libcontainerCgroup converts OCI resources for opencontainers/cgroups'
// managers (cgroupfs), the same conversion libcontainer makes for a
// container. Device rules are not touched: pod cgroups leave them to the
// containers below.
func libcontainerCgroup(path string, res *specs.LinuxResources) (*ocgroups.Cgroup, error) {
	if res == nil {
		res = &specs.LinuxResources{}
	}
	cg, err := specconv.CreateCgroupConfig(&specconv.CreateOpts{
		Spec: &specs.Spec{Linux: &specs.Linux{CgroupsPath: path, Resources: res}},
	}, nil)
	if err != nil {
		return nil, err
	}
	cg.Resources.SkipDevices = true
	return cg, nil
}

// Check rejects resources this host's cgroups cannot apply: the unified
// map names cgroup v2 files and has no meaning on v1.
func Check(res *specs.LinuxResources) error {
	if res != nil && len(res.Unified) > 0 && !ocgroups.IsCgroup2UnifiedMode() {
		return fmt.Errorf("unified cgroup settings %v need cgroup v2; this host has v1", slices.Sorted(maps.Keys(res.Unified)))
	}
	return nil
}
