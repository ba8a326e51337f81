package cri

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

// What only cgroup v2 reports (cgroups/pressure.go): left out (nil) where
// the kernel has none, so that the kubelet tells "no data" from zero.

func psiStats(p *sandbox.PSI) *runtimeapi.PsiStats {
	if p == nil {
		return nil
	}
	data := func(d sandbox.PSIData) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: d.Total, Avg10: d.Avg10, Avg60: d.Avg60, Avg300: d.Avg300}
	}
	return &runtimeapi.PsiStats{Full: data(p.Full), Some: data(p.Some)}
}

// ioUsage: the CRI's IoUsage carries I/O pressure only.
func ioUsage(ts int64, cg *sandbox.CgroupStats) *runtimeapi.IoUsage {
	if cg.IOPressure == nil {
		return nil
	}
	return &runtimeapi.IoUsage{Timestamp: ts, Psi: psiStats(cg.IOPressure)}
}

// swapUsage is memory.swap.current, and what memory.swap.max leaves of it
// when there is a limit.
func swapUsage(ts int64, cg *sandbox.CgroupStats) *runtimeapi.SwapUsage {
	sw := cg.Swap
	if sw == nil {
		return nil
	}
	out := &runtimeapi.SwapUsage{Timestamp: ts, SwapUsageBytes: &runtimeapi.UInt64Value{Value: sw.Usage}}
	if sw.Limit > 0 {
		out.SwapAvailableBytes = &runtimeapi.UInt64Value{Value: sw.Limit - min(sw.Usage, sw.Limit)}
	}
	return out
}
