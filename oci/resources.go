package oci

import (
	"maps"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
)

// PodLimits are the limits of the pod's cgroup: its resources plus the
// sandbox overhead.
func PodLimits(linux *runtimeapi.LinuxPodSandboxConfig) *specs.LinuxResources {
	return cgroups.TolerateMissingHugetlb(cgroups.PodLimits(linux.GetResources(), linux.GetOverhead(), cgroups.SwapAccounted()))
}

// MergeResources is cgroups.Merge for the CRI form that status reports:
// set fields of upd replace those of cur. oom_score_adj is not changed: a
// running process keeps the one it started with.
func MergeResources(cur, upd *runtimeapi.LinuxContainerResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if cur != nil {
		out = proto.Clone(cur).(*runtimeapi.LinuxContainerResources)
	}
	if upd == nil {
		return out
	}
	if upd.CpuPeriod != 0 {
		out.CpuPeriod = upd.CpuPeriod
	}
	if upd.CpuQuota != 0 {
		out.CpuQuota = upd.CpuQuota
	}
	if upd.CpuShares != 0 {
		out.CpuShares = upd.CpuShares
	}
	if upd.MemoryLimitInBytes != 0 {
		if upd.MemorySwapLimitInBytes == 0 && out.MemorySwapLimitInBytes > 0 && out.MemoryLimitInBytes > 0 {
			// The swap on top of memory is kept, as cgroups.Merge keeps it.
			out.MemorySwapLimitInBytes = -1
			if upd.MemoryLimitInBytes > 0 {
				out.MemorySwapLimitInBytes = upd.MemoryLimitInBytes + max(cur.GetMemorySwapLimitInBytes()-cur.GetMemoryLimitInBytes(), 0)
			}
		}
		out.MemoryLimitInBytes = upd.MemoryLimitInBytes
	}
	if upd.MemorySwapLimitInBytes != 0 {
		out.MemorySwapLimitInBytes = upd.MemorySwapLimitInBytes
	}
	if upd.CpusetCpus != "" {
		out.CpusetCpus = upd.CpusetCpus
	}
	if upd.CpusetMems != "" {
		out.CpusetMems = upd.CpusetMems
	}
	for _, h := range upd.HugepageLimits {
		i := slices.IndexFunc(out.HugepageLimits, func(o *runtimeapi.HugepageLimit) bool { return o.PageSize == h.PageSize })
		if i >= 0 {
			out.HugepageLimits[i] = proto.Clone(h).(*runtimeapi.HugepageLimit)
		} else {
			out.HugepageLimits = append(out.HugepageLimits, proto.Clone(h).(*runtimeapi.HugepageLimit))
		}
	}
	if len(upd.Unified) > 0 {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		maps.Copy(out.Unified, upd.Unified)
	}
	return out
}
