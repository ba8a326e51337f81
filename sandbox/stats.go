package sandbox

import (
	"bufio"
	"context"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/peapod-cri/peapod/cgroups"
)

// CgroupStats are the numbers read from a container's or pod's cgroup.
type CgroupStats = cgroups.Stats

// ContainerStats is a container's resource use at one moment.
type ContainerStats struct {
	Container Container
	Timestamp int64        // unix nanoseconds
	Cgroup    *CgroupStats // nil unless the container runs
	NanoCores uint64       // CPU rate, see cpuSamples
	Layer     *LayerUsage  // nil when the image store cannot tell
}

// LayerUsage is what a container's writable layer holds.
type LayerUsage struct {
	Mountpoint    string // of the filesystem that holds it (the image store's root)
	Bytes, Inodes uint64
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
}

// InterfaceStats are the counters of one network interface.
type InterfaceStats struct {
	Name                                 string
	RxBytes, RxErrors, TxBytes, TxErrors uint64
}

// layerUsage is implemented by image stores that can measure a
// container's writable layer.
type layerUsage interface {
	RootfsUsage(ctx context.Context, containerID string) (mountpoint string, bytes, inodes uint64, err error)
}

// ContainerStats reads the stats of one container.
func (r *Runtime) ContainerStats(ctx context.Context, id string) (ContainerStats, error) {
	c, err := r.lookupContainer(id)
	if err != nil {
		return ContainerStats{}, err
	}
	c.mu.Lock()
	ctr, lc := c.Container, c.lc
	c.mu.Unlock()
	st := ContainerStats{Container: ctr, Timestamp: time.Now().UnixNano()}
	if ctr.State == ContainerRunning && lc != nil {
		if paths := r.statsCache.cgroupPaths(ctr.ID, lc); paths != nil {
			if cs, err := cgroups.ReadStats(paths); err == nil {
				st.Cgroup = &cs
				st.NanoCores = r.samples.rate(r, ctr.ID, st.Timestamp, cs.CPUUsageNanos, ctr.StartedAt)
			} else {
				r.statsCache.forgetPaths(ctr.ID) // gone, or not yet there
			}
		}
	}
	if lu, ok := r.opts.Images.(layerUsage); ok {
		st.Layer = r.statsCache.layer(ctx, ctr.ID, lu, r)
	}
	return st, nil
}

// statsCache keeps what every stats call would otherwise redo for each
// container: its cgroup directories, which do not change while it runs,
// and its writable layer's usage, a directory walk, measured at most every
// layerUsageTTL (containerd's CRI collects it every 10 s too).
type statsCache struct {
	mu sync.Mutex
	m  map[string]*statsEntry
}

type statsEntry struct {
	paths   map[string]string
	layer   *LayerUsage
	layerAt time.Time
}

const layerUsageTTL = 10 * time.Second

func (s *statsCache) entry(id string) *statsEntry {
	if s.m == nil {
		s.m = map[string]*statsEntry{}
	}
	e := s.m[id]
	if e == nil {
		e = &statsEntry{}
		s.m[id] = e
	}
	return e
}

// cgroupPaths are the container's cgroup directories, from libcontainer's
// state the first time.
func (s *statsCache) cgroupPaths(id string, lc *libcontainer.Container) map[string]string {
	s.mu.Lock()
	paths := s.entry(id).paths
	s.mu.Unlock()
	if paths != nil {
		return paths
	}
	state, err := lc.State()
	if err != nil {
		return nil
	}
	s.mu.Lock()
	s.entry(id).paths = state.CgroupPaths
	s.mu.Unlock()
	return state.CgroupPaths
}

func (s *statsCache) forgetPaths(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil {
		e.paths = nil
	}
}

// layer is the container's writable layer usage, measured again once
// layerUsageTTL has passed.
func (s *statsCache) layer(ctx context.Context, id string, lu layerUsage, r *Runtime) *LayerUsage {
	s.mu.Lock()
	e := s.entry(id)
	l, at := e.layer, e.layerAt
	s.mu.Unlock()
	if l != nil && time.Since(at) < layerUsageTTL {
		return l
	}
	mp, b, n, err := lu.RootfsUsage(ctx, id)
	if err != nil {
		r.log.Debug("writable layer usage", "container", id, "err", err)
		return nil
	}
	l = &LayerUsage{Mountpoint: mp, Bytes: b, Inodes: n}
	s.mu.Lock()
	e = s.entry(id)
	e.layer, e.layerAt = l, time.Now()
	s.prune(r)
	s.mu.Unlock()
	return l
}

// prune forgets containers that are gone once the map has grown well past
// the number of live ones. s.mu is held.
func (s *statsCache) prune(r *Runtime) {
	if len(s.m) <= 64 {
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(s.m) < 2*len(r.containers) {
		return
	}
	for id := range s.m {
		if _, ok := r.containers[id]; !ok {
			delete(s.m, id)
		}
	}
}

// PodStats reads the stats of one pod and of its running containers.
func (r *Runtime) PodStats(ctx context.Context, id string) (PodStats, error) {
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
				st.NanoCores = r.samples.rate(r, pod.ID, st.Timestamp, cs.CPUUsageNanos, pod.CreatedAt)
			}
		}
	}
	if !oci.HostNetwork(pod.Config) {
		st.Network, err = netDev(pod.PausePID)
		if err != nil {
			r.log.Debug("pod network stats", "pod", pod.ID, "err", err)
		}
	}
	for _, c := range r.podContainers(pod.ID) {
		if c.State != ContainerRunning {
			continue
		}
		if cs, err := r.ContainerStats(ctx, c.ID); err == nil {
			st.Containers = append(st.Containers, cs)
		}
	}
	return st, nil
}

// netDev reads the interface counters of a process's network namespace.
func netDev(pid int) ([]InterfaceStats, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/dev")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []InterfaceStats
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, rest, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue // the two header lines
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "lo" || len(f) < 11 {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		// rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs ...
		out = append(out, InterfaceStats{Name: name, RxBytes: n(0), RxErrors: n(2), TxBytes: n(8), TxErrors: n(10)})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/%d/net/dev: %w", pid, err)
	}
	return out, nil
}

// cpuSamples turns cumulative CPU time into a rate (nanocores) between two
// stats calls, as kubelet's summary API wants. A rate is measured over at
// least minWindow; calls closer together get the last rate again. The first
// call gives the average since the container (or pod) started.
type cpuSamples struct {
	mu sync.Mutex
	m  map[string]cpuSample
}

type cpuSample struct {
	at, usage, rate uint64
}

const minWindow = uint64(time.Second)

func (s *cpuSamples) rate(r *Runtime, id string, now int64, usage uint64, started int64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]cpuSample{}
	}
	t := uint64(now)
	prev, ok := s.m[id]
	switch {
	case ok && t < prev.at+minWindow && usage >= prev.usage:
		return prev.rate
	case ok && t > prev.at && usage >= prev.usage:
		prev = cpuSample{at: t, usage: usage, rate: (usage - prev.usage) * 1e9 / (t - prev.at)}
	case started > 0 && now > started:
		prev = cpuSample{at: t, usage: usage, rate: usage * 1e9 / (t - uint64(started))}
	default:
		prev = cpuSample{at: t, usage: usage}
	}
	s.m[id] = prev
	if len(s.m) > 64 {
		s.prune(r)
	}
	return prev.rate
}

// prune forgets the samples of containers and pods that are gone, once the
// map has grown well past the number of live ones.
func (s *cpuSamples) prune(r *Runtime) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(s.m) < 2*(len(r.containers)+len(r.pods)) {
		return
	}
	for id := range s.m {
		_, c := r.containers[id]
		_, p := r.pods[id]
		if !c && !p {
			delete(s.m, id)
		}
	}
}
