package sandbox

import (
	"context"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/stats"
	"time"

	"github.com/peapod-cri/peapod/cgroups"
)

// CgroupStats are the numbers read from a container's or pod's cgroup.
type CgroupStats = cgroups.Stats

// PSI is a cgroup v2 resource's pressure stall information.
type PSI = cgroups.PSI

// PSIData is one line (some or full) of a PSI.
type PSIData = cgroups.PSIData

// ContainerStats is a container's resource use at one moment.
type ContainerStats struct {
	Container Container
	Timestamp int64        // unix nanoseconds
	Cgroup    *CgroupStats // nil unless the container runs
	NanoCores uint64       // CPU rate, see stats.CPURates
	Layer     *LayerUsage  // nil when the image store cannot tell
	// Detail and Files are read for the metrics RPCs only (PodMetrics).
	Detail *cgroups.Detail
	Files  *stats.FileCounts
}

// PodStats is a pod's resource use: its cgroup (pause and containers),
// its network interfaces and its running containers.
type PodStats struct {
	Pod        Pod
	Timestamp  int64
	Cgroup     *CgroupStats // nil unless the pod runs in a pod cgroup
	NanoCores  uint64
	Network    []InterfaceStats // the pod's network namespace, loopback left out
	Containers []ContainerStats
	Detail     *cgroups.Detail // PodMetrics only
	Files      *stats.FileCounts
}

// ContainerStats reads the stats of one container.
func (r *Runtime) ContainerStats(ctx context.Context, id string) (ContainerStats, error) {
	return r.containerStats(ctx, id, false)
}

// PodMetrics reads what PodStats does plus the cgroup Detail and the open
// files of the pod and its containers: the cAdvisor series of
// ListPodSandboxMetrics need them, the kubelet's stats calls do not.
func (r *Runtime) PodMetrics(ctx context.Context, id string) (PodStats, error) {
	return r.podStats(ctx, id, true)
}

// layerWalkFailpoint holds writable layer walks (store/failpoint.go's
// "hold:PATH"), for the test that a walk in progress blocks no stats call.
const layerWalkFailpoint = "layer-usage-walk"

func (r *Runtime) containerStats(ctx context.Context, id string, detail bool) (ContainerStats, error) {
	c, err := r.lookupContainer(id)
	if err != nil {
		return ContainerStats{}, err
	}
	c.mu.Lock()
	ctr, inLC, ociPaths := c.Container, c.inLibcontainer, c.ociCgroups
	c.mu.Unlock()
	st := ContainerStats{Container: ctr, Timestamp: time.Now().UnixNano()}
	if ctr.State == ContainerRunning && (inLC || ociPaths != nil) {
		paths := ociPaths
		if inLC {
			paths = r.statsCache.CgroupPaths(ctr.ID, func() (map[string]string, error) {
				lc, err := r.loadLibcontainer(c)
				if err != nil {
					return nil, err
				}
				state, err := lc.State()
				if err != nil {
					return nil, err
				}
				return state.CgroupPaths, nil
			})
		}
		if paths != nil {
			read := cgroups.ReadContainerStats
			if detail {
				read = cgroups.ReadStats // the metrics' container_processes
			}
			if cs, err := read(paths); err == nil {
				st.Cgroup = &cs
				st.NanoCores = r.samples.Rate(known{r, true}, ctr.ID, st.Timestamp, cs.CPUUsageNanos, ctr.StartedAt)
				if detail {
					st.Detail, st.Files = readDetail(paths)
				}
			} else {
				r.statsCache.ForgetPaths(ctr.ID) // gone, or not yet there
			}
		}
	}
	if lu, ok := r.opts.Images.(stats.LayerUsager); ok {
		st.Layer = r.statsCache.Layer(ctx, ctr.ID, lu, known{r, false}, r.log)
	}
	return st, nil
}

// PodStats reads the stats of one pod and of its running containers.
func (r *Runtime) PodStats(ctx context.Context, id string) (PodStats, error) {
	return r.podStats(ctx, id, false)
}

func (r *Runtime) podStats(ctx context.Context, id string, detail bool) (PodStats, error) {
	p, err := r.lookupPod(id)
	if err != nil {
		return PodStats{}, err
	}
	p.mu.Lock()
	p.refresh()
	pod := p.Pod
	p.mu.Unlock()
	st := PodStats{Pod: pod, Timestamp: time.Now().UnixNano()}
	if pod.State != PodReady {
		return st, nil
	}
	if pod.Cgroup != "" {
		if paths, err := cgroups.Paths(pod.Cgroup); err == nil {
			if cs, err := cgroups.ReadStats(paths); err == nil {
				st.Cgroup = &cs
				st.NanoCores = r.samples.Rate(known{r, true}, pod.ID, st.Timestamp, cs.CPUUsageNanos, pod.CreatedAt)
				if detail {
					st.Detail, st.Files = readDetail(paths)
				}
			}
		}
	}
	if !oci.HostNetwork(pod.Config) {
		st.Network, err = stats.NetDev(pod.PausePID)
		if err != nil {
			r.log.Debug("pod network stats", "pod", pod.ID, "err", err)
		}
	}
	for _, c := range r.podContainers(pod.ID) {
		if c.State != ContainerRunning {
			continue
		}
		if cs, err := r.containerStats(ctx, c.ID, detail); err == nil {
			st.Containers = append(st.Containers, cs)
		}
	}
	return st, nil
}

func readDetail(paths map[string]string) (*cgroups.Detail, *stats.FileCounts) {
	d := cgroups.ReadDetail(paths)
	f := stats.CountFiles(d.Procs)
	return &d, &f
}

// LayerUsage is a container's writable layer usage.
type LayerUsage = stats.LayerUsage

// InterfaceStats are one interface's counters.
type InterfaceStats = stats.InterfaceStats

// known lets the stats caches forget what the runtime no longer has: its
// containers, and its pods too when withPods.
type known struct {
	r        *Runtime
	withPods bool
}

func (k known) Len() int {
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.withPods {
		return len(k.r.containers) + len(k.r.pods)
	}
	return len(k.r.containers)
}

func (k known) Has(id string) bool {
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	_, c := k.r.containers[id]
	_, p := k.r.pods[id]
	return c || (p && k.withPods)
}
