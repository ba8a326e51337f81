package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container ID is empty")
	}
	st, err := s.runtime.ContainerStats(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: containerStats(&st)}, nil
}

// ListContainerStats reports the running containers that match the filter.
func (s *Service) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	var out []*runtimeapi.ContainerStats
	for _, c := range s.runtime.ContainersIn(sandbox.ContainerRunning) {
		if f != nil && (f.Id != "" && !matchID(c.ID, f.Id) ||
			f.PodSandboxId != "" && !matchID(c.PodID, f.PodSandboxId) ||
			!matchLabels(c.Config.GetLabels(), f.LabelSelector)) {
			continue
		}
		st, err := s.runtime.ContainerStats(ctx, c.ID)
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, containerStats(&st))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod sandbox ID is empty")
	}
	st, err := s.runtime.PodStats(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: podStats(&st)}, nil
}

// ListPodSandboxStats reports the ready pods that match the filter.
func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	var out []*runtimeapi.PodSandboxStats
	for _, p := range s.runtime.Pods() {
		if p.State != sandbox.PodReady {
			continue
		}
		if f != nil && (f.Id != "" && !matchID(p.ID, f.Id) || !matchLabels(p.Config.GetLabels(), f.LabelSelector)) {
			continue
		}
		st, err := s.runtime.PodStats(ctx, p.ID)
		if err != nil {
			continue
		}
		out = append(out, podStats(&st))
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

func containerStats(st *sandbox.ContainerStats) *runtimeapi.ContainerStats {
	c := st.Container
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id:          c.ID,
		Metadata:    c.Config.GetMetadata(),
		Labels:      c.Config.GetLabels(),
		Annotations: c.Config.GetAnnotations(),
	}}
	if cg := st.Cgroup; cg != nil {
		out.Cpu = cpuUsage(st.Timestamp, cg, st.NanoCores)
		out.Memory = memoryUsage(st.Timestamp, cg)
		out.Io = ioUsage(st.Timestamp, cg)
		out.Swap = swapUsage(st.Timestamp, cg)
	}
	if l := st.Layer; l != nil {
		at := l.At // the walk's time: it runs in the background
		if at == 0 {
			at = st.Timestamp
		}
		out.WritableLayer = &runtimeapi.FilesystemUsage{
			Timestamp:  at,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: l.Mountpoint},
			UsedBytes:  &runtimeapi.UInt64Value{Value: l.Bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: l.Inodes},
		}
	}
	return out
}

func podStats(st *sandbox.PodStats) *runtimeapi.PodSandboxStats {
	p := st.Pod
	linux := &runtimeapi.LinuxPodSandboxStats{}
	if cg := st.Cgroup; cg != nil {
		linux.Cpu = cpuUsage(st.Timestamp, cg, st.NanoCores)
		linux.Memory = memoryUsage(st.Timestamp, cg)
		linux.Process = &runtimeapi.ProcessUsage{Timestamp: st.Timestamp, ProcessCount: &runtimeapi.UInt64Value{Value: cg.Pids}}
		linux.Io = ioUsage(st.Timestamp, cg)
	}
	if len(st.Network) > 0 {
		n := &runtimeapi.NetworkUsage{Timestamp: st.Timestamp}
		for _, i := range st.Network {
			iu := &runtimeapi.NetworkInterfaceUsage{
				Name:     i.Name,
				RxBytes:  &runtimeapi.UInt64Value{Value: i.RxBytes},
				RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
				TxBytes:  &runtimeapi.UInt64Value{Value: i.TxBytes},
				TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors},
			}
			n.Interfaces = append(n.Interfaces, iu)
			if i.Name == "eth0" || n.DefaultInterface == nil {
				n.DefaultInterface = iu
			}
		}
		linux.Network = n
	}
	for i := range st.Containers {
		linux.Containers = append(linux.Containers, containerStats(&st.Containers[i]))
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id:          p.ID,
			Metadata:    p.Config.GetMetadata(),
			Labels:      p.Config.GetLabels(),
			Annotations: p.Config.GetAnnotations(),
		},
		Linux: linux,
	}
}

func cpuUsage(ts int64, cg *sandbox.CgroupStats, nanoCores uint64) *runtimeapi.CpuUsage {
	return &runtimeapi.CpuUsage{
		Timestamp:            ts,
		UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cg.CPUUsageNanos},
		UsageNanoCores:       &runtimeapi.UInt64Value{Value: nanoCores},
		Psi:                  psiStats(cg.CPUPressure),
	}
}

func memoryUsage(ts int64, cg *sandbox.CgroupStats) *runtimeapi.MemoryUsage {
	m := &runtimeapi.MemoryUsage{
		Timestamp:       ts,
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: cg.WorkingSet},
		UsageBytes:      &runtimeapi.UInt64Value{Value: cg.MemoryUsage},
		RssBytes:        &runtimeapi.UInt64Value{Value: cg.RSS},
		PageFaults:      &runtimeapi.UInt64Value{Value: cg.PageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: cg.MajorPageFaults},
		Psi:             psiStats(cg.MemoryPressure),
	}
	if cg.MemoryLimit > 0 {
		avail := uint64(0)
		if cg.MemoryLimit > cg.WorkingSet {
			avail = cg.MemoryLimit - cg.WorkingSet
		}
		m.AvailableBytes = &runtimeapi.UInt64Value{Value: avail}
	}
	return m
}
