package cri

import (
	"context"
	"slices"
	"strconv"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/sandbox"
	"github.com/peapod-cri/peapod/sandbox/stats"
)

// The CRI metrics RPCs give kubelet's /metrics/cadvisor the series cAdvisor
// would, without cAdvisor: the names, help texts and labels are cAdvisor's
// (the set critest v1.37 expects, minus the pressure and hugetlb series,
// which need cgroup v2 controllers this module does not read). Values are
// whole numbers (the CRI carries uint64), so times are in whole seconds, as
// CRI-O reports them. Every value is read from the kernel: the cgroup
// (cgroups.Detail), /proc (open files, network counters) and the filesystem
// of the writable layer.

// baseLabels are cAdvisor's container labels; a series adds its own
// (interface, device, ...) and the keys are sorted, as cAdvisor's are.
var baseLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

type metricDef struct {
	name, help string
	kind       runtimeapi.MetricType
	extra      []string // labels beyond baseLabels
	keys       []string // baseLabels + extra, sorted
}

var (
	netLabels     = []string{"interface"}
	fsLabels      = []string{"device"}
	blkioLabels   = []string{"device", "major", "minor", "operation"}
	failureLabels = []string{"failure_type", "scope"}
	ulimitLabels  = []string{"ulimit"}
)

const (
	metricCounter = runtimeapi.MetricType_COUNTER
	metricGauge   = runtimeapi.MetricType_GAUGE
)

var metricDefs = []metricDef{
	{name: "container_blkio_device_usage_total", help: "Blkio Device bytes usage", kind: metricCounter, extra: blkioLabels},
	{name: "container_cpu_cfs_periods_total", help: "Number of elapsed enforcement period intervals.", kind: metricCounter},
	{name: "container_cpu_cfs_throttled_periods_total", help: "Number of throttled period intervals.", kind: metricCounter},
	{name: "container_cpu_cfs_throttled_seconds_total", help: "Total time duration the container has been throttled.", kind: metricCounter},
	{name: "container_cpu_system_seconds_total", help: "Cumulative system cpu time consumed in seconds.", kind: metricCounter},
	{name: "container_cpu_usage_seconds_total", help: "Cumulative cpu time consumed in seconds.", kind: metricCounter},
	{name: "container_cpu_user_seconds_total", help: "Cumulative user cpu time consumed in seconds.", kind: metricCounter},
	{name: "container_file_descriptors", help: "Number of open file descriptors for the container.", kind: metricGauge},
	{name: "container_fs_inodes_free", help: "Number of available Inodes", kind: metricGauge, extra: fsLabels},
	{name: "container_fs_inodes_total", help: "Number of Inodes", kind: metricGauge, extra: fsLabels},
	{name: "container_fs_limit_bytes", help: "Number of bytes that can be consumed by the container on this filesystem.", kind: metricGauge, extra: fsLabels},
	{name: "container_fs_reads_bytes_total", help: "Cumulative count of bytes read", kind: metricCounter, extra: fsLabels},
	{name: "container_fs_reads_total", help: "Cumulative count of reads completed", kind: metricCounter, extra: fsLabels},
	{name: "container_fs_usage_bytes", help: "Number of bytes that are consumed by the container on this filesystem.", kind: metricGauge, extra: fsLabels},
	{name: "container_fs_writes_bytes_total", help: "Cumulative count of bytes written", kind: metricCounter, extra: fsLabels},
	{name: "container_fs_writes_total", help: "Cumulative count of writes completed", kind: metricCounter, extra: fsLabels},
	{name: "container_last_seen", help: "Last time a container was seen by the exporter", kind: metricGauge},
	{name: "container_memory_cache", help: "Number of bytes of page cache memory.", kind: metricGauge},
	{name: "container_memory_failcnt", help: "Number of memory usage hits limits", kind: metricCounter},
	{name: "container_memory_failures_total", help: "Cumulative count of memory allocation failures.", kind: metricCounter, extra: failureLabels},
	{name: "container_memory_kernel_usage", help: "Size of kernel memory allocated in bytes.", kind: metricGauge},
	{name: "container_memory_mapped_file", help: "Size of memory mapped files in bytes.", kind: metricGauge},
	{name: "container_memory_max_usage_bytes", help: "Maximum memory usage recorded in bytes", kind: metricGauge},
	{name: "container_memory_rss", help: "Size of RSS in bytes.", kind: metricGauge},
	{name: "container_memory_swap", help: "Container swap usage in bytes.", kind: metricGauge},
	{name: "container_memory_usage_bytes", help: "Current memory usage in bytes, including all memory regardless of when it was accessed", kind: metricGauge},
	{name: "container_memory_working_set_bytes", help: "Current working set in bytes.", kind: metricGauge},
	{name: "container_network_receive_bytes_total", help: "Cumulative count of bytes received", kind: metricCounter, extra: netLabels},
	{name: "container_network_receive_errors_total", help: "Cumulative count of errors encountered while receiving", kind: metricCounter, extra: netLabels},
	{name: "container_network_receive_packets_dropped_total", help: "Cumulative count of packets dropped while receiving", kind: metricCounter, extra: netLabels},
	{name: "container_network_receive_packets_total", help: "Cumulative count of packets received", kind: metricCounter, extra: netLabels},
	{name: "container_network_transmit_bytes_total", help: "Cumulative count of bytes transmitted", kind: metricCounter, extra: netLabels},
	{name: "container_network_transmit_errors_total", help: "Cumulative count of errors encountered while transmitting", kind: metricCounter, extra: netLabels},
	{name: "container_network_transmit_packets_dropped_total", help: "Cumulative count of packets dropped while transmitting", kind: metricCounter, extra: netLabels},
	{name: "container_network_transmit_packets_total", help: "Cumulative count of packets transmitted", kind: metricCounter, extra: netLabels},
	{name: "container_oom_events_total", help: "Count of out of memory events observed for the container", kind: metricCounter},
	{name: "container_processes", help: "Number of processes running inside the container.", kind: metricGauge},
	{name: "container_sockets", help: "Number of open sockets for the container.", kind: metricGauge},
	{name: "container_spec_cpu_period", help: "CPU period of the container.", kind: metricGauge},
	{name: "container_spec_cpu_quota", help: "CPU quota of the container.", kind: metricGauge},
	{name: "container_spec_cpu_shares", help: "CPU share of the container.", kind: metricGauge},
	{name: "container_spec_memory_limit_bytes", help: "Memory limit for the container.", kind: metricGauge},
	{name: "container_spec_memory_reservation_limit_bytes", help: "Memory reservation limit for the container.", kind: metricGauge},
	{name: "container_spec_memory_swap_limit_bytes", help: "Memory swap limit for the container.", kind: metricGauge},
	{name: "container_start_time_seconds", help: "Start time of the container since unix epoch in seconds.", kind: metricGauge},
	{name: "container_threads", help: "Number of threads running inside the container", kind: metricGauge},
	{name: "container_threads_max", help: "Maximum number of threads allowed inside the container, infinity if value is zero", kind: metricGauge},
	{name: "container_ulimits_soft", help: "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", kind: metricGauge, extra: ulimitLabels},
}

// metricsByName indexes metricDefs, after filling in their sorted keys.
var metricsByName = func() map[string]*metricDef {
	m := make(map[string]*metricDef, len(metricDefs))
	for i := range metricDefs {
		d := &metricDefs[i]
		d.keys = append(slices.Clone(baseLabels), d.extra...)
		slices.Sort(d.keys)
		m[d.name] = d
	}
	return m
}()

func (s *Service) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	out := make([]*runtimeapi.MetricDescriptor, 0, len(metricDefs))
	for _, d := range metricDefs {
		out = append(out, &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: d.keys})
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: out}, nil
}

// ListPodSandboxMetrics reports every ready pod: the pod's cgroup (container
// label empty, as cAdvisor shows a pod's cgroup) with its network, and each
// running container.
func (s *Service) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	var out []*runtimeapi.PodSandboxMetrics
	for _, p := range s.runtime.Pods() {
		if p.State != sandbox.PodReady {
			continue
		}
		st, err := s.runtime.PodMetrics(ctx, p.ID)
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, podMetrics(&st, time.Now()))
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: out}, nil
}

func podMetrics(st *sandbox.PodStats, now time.Time) *runtimeapi.PodSandboxMetrics {
	meta := st.Pod.Config.GetMetadata()
	ns, pod := meta.GetNamespace(), meta.GetName()
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: st.Pod.ID}
	m := metricSet{base: map[string]string{"container": "", "id": st.Pod.ID, "image": "", "name": st.Pod.ID, "namespace": ns, "pod": pod}}
	m.add("container_last_seen", uint64(now.Unix()))
	if st.Pod.CreatedAt > 0 {
		m.add("container_start_time_seconds", uint64(st.Pod.CreatedAt/1e9))
	}
	m.cgroup(st.Cgroup, st.Detail, st.Files)
	for _, i := range st.Network {
		l := map[string]string{"interface": i.Name}
		m.addWith("container_network_receive_bytes_total", i.RxBytes, l)
		m.addWith("container_network_receive_errors_total", i.RxErrors, l)
		m.addWith("container_network_receive_packets_dropped_total", i.RxDropped, l)
		m.addWith("container_network_receive_packets_total", i.RxPackets, l)
		m.addWith("container_network_transmit_bytes_total", i.TxBytes, l)
		m.addWith("container_network_transmit_errors_total", i.TxErrors, l)
		m.addWith("container_network_transmit_packets_dropped_total", i.TxDropped, l)
		m.addWith("container_network_transmit_packets_total", i.TxPackets, l)
	}
	pm.Metrics = m.out
	for i := range st.Containers {
		c := &st.Containers[i]
		cm := metricSet{base: map[string]string{"container": c.Container.Config.GetMetadata().GetName(), "id": c.Container.ID,
			"image": c.Container.Image.Ref, "name": c.Container.ID, "namespace": ns, "pod": pod}}
		cm.add("container_last_seen", uint64(now.Unix()))
		cm.cgroup(c.Cgroup, c.Detail, c.Files)
		if l := c.Layer; l != nil {
			fs, err := stats.Filesystem(l.Mountpoint)
			dev := map[string]string{"device": fs.Device}
			cm.addWith("container_fs_usage_bytes", l.Bytes, dev)
			if err == nil {
				cm.addWith("container_fs_limit_bytes", fs.Limit, dev)
				cm.addWith("container_fs_inodes_total", fs.Inodes, dev)
				cm.addWith("container_fs_inodes_free", fs.InodesFree, dev)
			}
		}
		if c.Container.StartedAt > 0 {
			cm.add("container_start_time_seconds", uint64(c.Container.StartedAt/1e9))
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.Container.ID, Metrics: cm.out})
	}
	return pm
}

// metricSet gathers the series of one pod or container; Timestamp 0 says
// the values were read live.
type metricSet struct {
	base map[string]string
	out  []*runtimeapi.Metric
}

func (m *metricSet) add(name string, v uint64) { m.addWith(name, v, nil) }

// addWith adds a series whose labels are base plus extra, in the order of
// the descriptor's keys.
func (m *metricSet) addWith(name string, v uint64, extra map[string]string) {
	def, ok := metricsByName[name]
	if !ok {
		panic("cri: metric without a descriptor: " + name) // a programming error, caught by the unit test
	}
	values := make([]string, len(def.keys))
	for i, k := range def.keys {
		if x, ok := extra[k]; ok {
			values[i] = x
		} else {
			values[i] = m.base[k]
		}
	}
	m.out = append(m.out, &runtimeapi.Metric{Name: name, MetricType: def.kind, LabelValues: values, Value: &runtimeapi.UInt64Value{Value: v}})
}

func (m *metricSet) cgroup(cg *sandbox.CgroupStats, d *cgroups.Detail, f *stats.FileCounts) {
	if cg == nil {
		return
	}
	m.add("container_cpu_usage_seconds_total", cg.CPUUsageNanos/1e9)
	m.add("container_memory_usage_bytes", cg.MemoryUsage)
	m.add("container_memory_working_set_bytes", cg.WorkingSet)
	m.add("container_memory_rss", cg.RSS)
	m.add("container_spec_memory_limit_bytes", cg.MemoryLimit)
	m.add("container_processes", cg.Pids)
	// cAdvisor's failure counts: page faults, minor and major, of the cgroup
	// and (scope "hierarchy") of it with its children; the numbers read are
	// hierarchical already.
	for _, scope := range []string{"container", "hierarchy"} {
		m.addWith("container_memory_failures_total", cg.PageFaults, map[string]string{"failure_type": "pgfault", "scope": scope})
		m.addWith("container_memory_failures_total", cg.MajorPageFaults, map[string]string{"failure_type": "pgmajfault", "scope": scope})
	}
	if d == nil {
		return
	}
	m.add("container_cpu_cfs_periods_total", d.CFSPeriods)
	m.add("container_cpu_cfs_throttled_periods_total", d.CFSThrottledPeriods)
	m.add("container_cpu_cfs_throttled_seconds_total", d.CFSThrottledNanos/1e9)
	m.add("container_cpu_user_seconds_total", d.UserNanos/1e9)
	m.add("container_cpu_system_seconds_total", d.SystemNanos/1e9)
	m.add("container_memory_cache", d.Cache)
	m.add("container_memory_mapped_file", d.MappedFile)
	m.add("container_memory_swap", d.Swap)
	m.add("container_memory_kernel_usage", d.KernelUsage)
	m.add("container_memory_failcnt", d.Failcnt)
	m.add("container_memory_max_usage_bytes", d.MaxUsage)
	m.add("container_oom_events_total", d.OOMKills)
	m.add("container_spec_cpu_period", d.CPUPeriod)
	if d.CPUQuota > 0 { // cAdvisor leaves the series out without a quota
		m.add("container_spec_cpu_quota", d.CPUQuota)
	}
	m.add("container_spec_cpu_shares", d.CPUShares)
	m.add("container_spec_memory_reservation_limit_bytes", d.MemoryReservation)
	m.add("container_spec_memory_swap_limit_bytes", d.SwapLimit)
	m.add("container_threads", d.Threads)
	m.add("container_threads_max", d.ThreadsMax)
	for _, io := range d.IO {
		dev := stats.BlockDevice(io.Major, io.Minor)
		maj, mnr := strconv.FormatUint(io.Major, 10), strconv.FormatUint(io.Minor, 10)
		for _, op := range []struct {
			name string
			v    uint64
		}{{"Read", io.ReadBytes}, {"Write", io.WriteBytes}} {
			m.addWith("container_blkio_device_usage_total", op.v, map[string]string{"device": dev, "major": maj, "minor": mnr, "operation": op.name})
		}
		l := map[string]string{"device": dev}
		m.addWith("container_fs_reads_bytes_total", io.ReadBytes, l)
		m.addWith("container_fs_reads_total", io.Reads, l)
		m.addWith("container_fs_writes_bytes_total", io.WriteBytes, l)
		m.addWith("container_fs_writes_total", io.Writes, l)
	}
	if f != nil {
		m.add("container_file_descriptors", f.FDs)
		m.add("container_sockets", f.Sockets)
		if f.NoFileSoft > 0 {
			m.addWith("container_ulimits_soft", f.NoFileSoft, map[string]string{"ulimit": "max_open_files"})
		}
	}
}
