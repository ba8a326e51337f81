// Package stats keeps what the stats RPCs reuse between calls: cgroup
// paths, writable layer usage (measured at most every layerUsageTTL), and
// CPU samples to turn cumulative CPU time into a rate; and reads a network
// namespace's interface counters. The lifecycle owns the IDs: it passes a
// Known to prune the entries of containers and pods that are gone.
package stats

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Known tells the IDs the runtime still knows from those that are gone.
type Known interface {
	Len() int
	Has(id string) bool
}

// LayerUsage is what a container's writable layer holds.
type LayerUsage struct {
	Mountpoint    string // of the filesystem that holds it (the image store's root)
	Bytes, Inodes uint64
	At            int64 // when it was measured, Unix ns
}

// InterfaceStats are the counters of one network interface.
type InterfaceStats struct {
	Name                                 string
	RxBytes, RxErrors, TxBytes, TxErrors uint64
	RxPackets, RxDropped                 uint64
	TxPackets, TxDropped                 uint64
}

// LayerUsager is implemented by image stores that can measure a
// container's writable layer.
type LayerUsager interface {
	RootfsUsage(ctx context.Context, containerID string) (mountpoint string, bytes, inodes uint64, err error)
}

// Cache keeps what every stats call would otherwise redo for each
// container: its cgroup directories, which do not change while it runs,
// and its writable layer's usage, a directory walk, measured at most every
// layerUsageTTL (containerd's CRI collects it every 10 s too).
//
// The walk is the container's to make long: it owns the layer and can fill
// it with millions of entries. So walks run in the background, at most
// maxLayerWalks at once, each within layerWalkTimeout, and a stats call
// answers with the last measurement; it waits (at most firstLayerWait) only
// for a container's first one.
type Cache struct {
	mu sync.Mutex
	m  map[string]*statsEntry
	// BeforeWalk, when set, runs before each walk (a test's failpoint holds
	// walks there).
	BeforeWalk func(context.Context) error
	walks      chan struct{} // semaphore of running walks
}

type statsEntry struct {
	paths   map[string]string
	layer   *LayerUsage
	layerAt time.Time     // when the last walk started
	walking chan struct{} // closed when the running walk ends; nil if none
}

const (
	layerUsageTTL    = 10 * time.Second
	layerWalkTimeout = 2 * time.Minute
	firstLayerWait   = 2 * time.Second
	maxLayerWalks    = 2
)

func (s *Cache) entry(id string) *statsEntry {
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

// CgroupPaths are the container's cgroup directories, from load (its
// libcontainer state) the first time.
func (s *Cache) CgroupPaths(id string, load func() (map[string]string, error)) map[string]string {
	s.mu.Lock()
	paths := s.entry(id).paths
	s.mu.Unlock()
	if paths != nil {
		return paths
	}
	paths, err := load()
	if err != nil {
		return nil
	}
	s.mu.Lock()
	s.entry(id).paths = paths
	s.mu.Unlock()
	return paths
}

func (s *Cache) ForgetPaths(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil {
		e.paths = nil
	}
}

// Layer is the container's writable layer usage as last measured. A
// measurement older than layerUsageTTL starts a new walk in the background;
// the first measurement of a container is waited for, at most
// firstLayerWait (nil if it is not done by then).
func (s *Cache) Layer(ctx context.Context, id string, lu LayerUsager, live Known, log *slog.Logger) *LayerUsage {
	s.mu.Lock()
	e := s.entry(id)
	l, walking := e.layer, e.walking
	if walking == nil && (l == nil && e.layerAt.IsZero() || time.Since(e.layerAt) >= layerUsageTTL) {
		walking = make(chan struct{})
		e.walking, e.layerAt = walking, time.Now()
		go s.walk(id, lu, live, log, walking)
	}
	s.mu.Unlock()
	if l != nil || walking == nil {
		return l
	}
	select {
	case <-walking:
	case <-time.After(firstLayerWait):
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entry(id).layer
}

// walk measures one container's layer and records the result; a failed
// walk keeps the last measurement (and is tried again after the TTL).
func (s *Cache) walk(id string, lu LayerUsager, live Known, log *slog.Logger, done chan struct{}) {
	defer close(done)
	s.mu.Lock()
	if s.walks == nil {
		s.walks = make(chan struct{}, maxLayerWalks)
	}
	sem, hold := s.walks, s.BeforeWalk
	s.mu.Unlock()
	sem <- struct{}{}
	defer func() { <-sem }()
	ctx, cancel := context.WithTimeout(context.Background(), layerWalkTimeout)
	defer cancel()
	var l *LayerUsage
	err := ctx.Err()
	if hold != nil {
		err = hold(ctx)
	}
	if err == nil {
		var mp string
		var b, n uint64
		if mp, b, n, err = lu.RootfsUsage(ctx, id); err == nil {
			l = &LayerUsage{Mountpoint: mp, Bytes: b, Inodes: n, At: time.Now().UnixNano()}
		}
	}
	if err != nil {
		log.Warn("writable layer usage not measured; the last measurement stays", "container", id, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id)
	e.walking = nil
	if l != nil {
		e.layer = l
	}
	s.prune(live)
}

// prune forgets containers that are gone once the map has grown well past
// the number of live ones. s.mu is held.
func (s *Cache) prune(live Known) {
	if len(s.m) <= 64 || len(s.m) < 2*live.Len() {
		return
	}
	for id := range s.m {
		if !live.Has(id) {
			delete(s.m, id)
		}
	}
}

// NetDev reads the interface counters of a process's network namespace.
func NetDev(pid int) ([]InterfaceStats, error) {
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
		out = append(out, InterfaceStats{Name: name,
			RxBytes: n(0), RxPackets: n(1), RxErrors: n(2), RxDropped: n(3),
			TxBytes: n(8), TxPackets: n(9), TxErrors: n(10), TxDropped: n(11)})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/%d/net/dev: %w", pid, err)
	}
	return out, nil
}

// CPURates turns cumulative CPU time into a rate (nanocores) between two
// stats calls, as kubelet's summary API wants. A rate is measured over at
// least minWindow; calls closer together get the last rate again. The first
// call gives the average since the container (or pod) started.
type CPURates struct {
	mu sync.Mutex
	m  map[string]cpuSample
}

type cpuSample struct {
	at, usage, rate uint64
}

const minWindow = uint64(time.Second)

func (s *CPURates) Rate(live Known, id string, now int64, usage uint64, started int64) uint64 {
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
		s.prune(live)
	}
	return prev.rate
}

// prune forgets the samples of containers and pods that are gone, once the
// map has grown well past the number of live ones.
func (s *CPURates) prune(live Known) {
	if len(s.m) < 2*live.Len() {
		return
	}
	for id := range s.m {
		if !live.Has(id) {
			delete(s.m, id)
		}
	}
}
