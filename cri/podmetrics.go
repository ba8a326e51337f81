package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

// The CRI metrics RPCs give kubelet's /metrics/cadvisor the series cAdvisor
// would, without cAdvisor: the names and labels are cAdvisor's. Values are
// whole numbers (the CRI carries uint64), so CPU time is in whole seconds,
// as CRI-O reports it.

// labelKeys are cAdvisor's container labels; network series add the
// interface.
var (
	labelKeys    = []string{"container", "id", "image", "name", "namespace", "pod"}
	netLabelKeys = []string{"container", "id", "image", "interface", "name", "namespace", "pod"}
)

type metricDef struct {
	name, help string
	kind       runtimeapi.MetricType
	net        bool
}

var metricDefs = []metricDef{
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", runtimeapi.MetricType_COUNTER, false},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", runtimeapi.MetricType_GAUGE, false},
	{"container_memory_working_set_bytes", "Current working set in bytes.", runtimeapi.MetricType_GAUGE, false},
	{"container_memory_rss", "Size of RSS in bytes.", runtimeapi.MetricType_GAUGE, false},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", runtimeapi.MetricType_GAUGE, false},
	{"container_processes", "Number of processes running inside the container.", runtimeapi.MetricType_GAUGE, false},
	{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", runtimeapi.MetricType_GAUGE, false},
	{"container_fs_inodes_total", "Number of inodes used by the container on this filesystem.", runtimeapi.MetricType_GAUGE, false},
	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", runtimeapi.MetricType_GAUGE, false},
	{"container_network_receive_bytes_total", "Cumulative count of bytes received", runtimeapi.MetricType_COUNTER, true},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", runtimeapi.MetricType_COUNTER, true},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", runtimeapi.MetricType_COUNTER, true},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", runtimeapi.MetricType_COUNTER, true},
}

func (s *Service) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	out := make([]*runtimeapi.MetricDescriptor, 0, len(metricDefs))
	for _, d := range metricDefs {
		keys := labelKeys
		if d.net {
			keys = netLabelKeys
		}
		out = append(out, &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: keys})
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
		st, err := s.runtime.PodStats(ctx, p.ID)
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, podMetrics(&st))
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: out}, nil
}

func podMetrics(st *sandbox.PodStats) *runtimeapi.PodSandboxMetrics {
	meta := st.Pod.Config.GetMetadata()
	ns, pod := meta.GetNamespace(), meta.GetName()
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: st.Pod.ID}
	m := metricSet{labels: []string{"", st.Pod.ID, "", st.Pod.ID, ns, pod}}
	if cg := st.Cgroup; cg != nil {
		m.cgroup(cg)
	}
	for _, i := range st.Network {
		l := []string{"", st.Pod.ID, "", i.Name, st.Pod.ID, ns, pod}
		m.addWith(l, "container_network_receive_bytes_total", runtimeapi.MetricType_COUNTER, i.RxBytes)
		m.addWith(l, "container_network_receive_errors_total", runtimeapi.MetricType_COUNTER, i.RxErrors)
		m.addWith(l, "container_network_transmit_bytes_total", runtimeapi.MetricType_COUNTER, i.TxBytes)
		m.addWith(l, "container_network_transmit_errors_total", runtimeapi.MetricType_COUNTER, i.TxErrors)
	}
	pm.Metrics = m.out
	for i := range st.Containers {
		c := &st.Containers[i]
		cm := metricSet{labels: []string{c.Container.Config.GetMetadata().GetName(), c.Container.ID, c.Container.Image.Ref, c.Container.ID, ns, pod}}
		if cg := c.Cgroup; cg != nil {
			cm.cgroup(cg)
		}
		if l := c.Layer; l != nil {
			cm.add("container_fs_usage_bytes", runtimeapi.MetricType_GAUGE, l.Bytes)
			cm.add("container_fs_inodes_total", runtimeapi.MetricType_GAUGE, l.Inodes)
		}
		if c.Container.StartedAt > 0 {
			cm.add("container_start_time_seconds", runtimeapi.MetricType_GAUGE, uint64(c.Container.StartedAt/1e9))
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.Container.ID, Metrics: cm.out})
	}
	return pm
}

// metricSet gathers the series of one pod or container; Timestamp 0 says
// the values were read live.
type metricSet struct {
	labels []string
	out    []*runtimeapi.Metric
}

func (m *metricSet) add(name string, kind runtimeapi.MetricType, v uint64) {
	m.addWith(m.labels, name, kind, v)
}

func (m *metricSet) addWith(labels []string, name string, kind runtimeapi.MetricType, v uint64) {
	m.out = append(m.out, &runtimeapi.Metric{Name: name, MetricType: kind, LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: v}})
}

func (m *metricSet) cgroup(cg *sandbox.CgroupStats) {
	m.add("container_cpu_usage_seconds_total", runtimeapi.MetricType_COUNTER, cg.CPUUsageNanos/1e9)
	m.add("container_memory_usage_bytes", runtimeapi.MetricType_GAUGE, cg.MemoryUsage)
	m.add("container_memory_working_set_bytes", runtimeapi.MetricType_GAUGE, cg.WorkingSet)
	m.add("container_memory_rss", runtimeapi.MetricType_GAUGE, cg.RSS)
	if cg.MemoryLimit > 0 {
		m.add("container_spec_memory_limit_bytes", runtimeapi.MetricType_GAUGE, cg.MemoryLimit)
	}
	m.add("container_processes", runtimeapi.MetricType_GAUGE, cg.Pids)
}
