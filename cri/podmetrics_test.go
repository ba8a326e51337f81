package cri

import (
	"context"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/sandbox"
	"github.com/peapod-cri/peapod/sandbox/stats"
)

// wantSeries are the series critest v1.37.0's PodSandbox metrics specs
// require with values (pkg/validate/pod.go: expectedMetricDescriptorNames
// minus its unimplemented and optional lists), plus the optional I/O ones,
// which peapod reads from blkio/io.stat.
var wantSeries = []string{
	"container_blkio_device_usage_total",
	"container_cpu_cfs_periods_total",
	"container_cpu_cfs_throttled_periods_total",
	"container_cpu_cfs_throttled_seconds_total",
	"container_cpu_system_seconds_total",
	"container_cpu_usage_seconds_total",
	"container_cpu_user_seconds_total",
	"container_file_descriptors",
	"container_fs_inodes_free",
	"container_fs_inodes_total",
	"container_fs_limit_bytes",
	"container_fs_reads_bytes_total",
	"container_fs_reads_total",
	"container_fs_usage_bytes",
	"container_fs_writes_bytes_total",
	"container_fs_writes_total",
	"container_last_seen",
	"container_memory_cache",
	"container_memory_failcnt",
	"container_memory_failures_total",
	"container_memory_kernel_usage",
	"container_memory_mapped_file",
	"container_memory_max_usage_bytes",
	"container_memory_rss",
	"container_memory_swap",
	"container_memory_usage_bytes",
	"container_memory_working_set_bytes",
	"container_network_receive_bytes_total",
	"container_network_receive_errors_total",
	"container_network_receive_packets_dropped_total",
	"container_network_receive_packets_total",
	"container_network_transmit_bytes_total",
	"container_network_transmit_errors_total",
	"container_network_transmit_packets_dropped_total",
	"container_network_transmit_packets_total",
	"container_oom_events_total",
	"container_processes",
	"container_sockets",
	"container_spec_cpu_period",
	"container_spec_cpu_shares",
	"container_spec_memory_limit_bytes",
	"container_spec_memory_swap_limit_bytes",
	"container_start_time_seconds",
	"container_threads",
	"container_threads_max",
}

// TestPodMetrics: every series names a descriptor and carries one value per
// label key, as kubelet's CRI metrics collector requires.
func TestPodMetrics(t *testing.T) {
	desc, err := (&Service{}).ListMetricDescriptors(context.Background(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range desc.Descriptors {
		keys[d.Name] = len(d.LabelKeys)
	}
	cg := &sandbox.CgroupStats{CPUUsageNanos: 3_500_000_000, MemoryUsage: 100, WorkingSet: 80, RSS: 50, MemoryLimit: 1 << 20, Pids: 2}
	st := &sandbox.PodStats{
		Pod:     sandbox.Pod{ID: "p1", Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns"}}},
		Cgroup:  cg,
		Network: []sandbox.InterfaceStats{{Name: "eth0", RxBytes: 10, TxBytes: 20}},
		Containers: []sandbox.ContainerStats{{
			Container: sandbox.Container{ID: "c1", StartedAt: 5e9, Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, Image: sandbox.ImageRef{Ref: "busybox"}},
			Cgroup:    cg,
			Layer:     &sandbox.LayerUsage{Bytes: 4096, Inodes: 3},
		}},
	}
	detail := &cgroups.Detail{CFSPeriods: 7, CFSThrottledNanos: 2e9, UserNanos: 1e9, SystemNanos: 2e9, CPUPeriod: 100000, CPUQuota: 20000, CPUShares: 1024,
		SwapLimit: 64 << 20, Threads: 3, IO: []cgroups.DeviceIO{{Major: 8, Minor: 0, ReadBytes: 512, Reads: 1}}}
	st.Cgroup, st.Detail, st.Files = cg, detail, &stats.FileCounts{FDs: 4, Sockets: 1, NoFileSoft: 1024}
	st.Containers[0].Detail, st.Containers[0].Files = detail, &stats.FileCounts{FDs: 3}
	st.Containers[0].Layer.Mountpoint = t.TempDir()
	pm := podMetrics(st, time.Unix(1000, 0))
	values := map[string]uint64{}
	seen := map[string]bool{}
	check := func(ms []*runtimeapi.Metric, who string) {
		for _, m := range ms {
			seen[m.Name] = true
			n, ok := keys[m.Name]
			if !ok {
				t.Errorf("%s: %s has no descriptor", who, m.Name)
			}
			if len(m.LabelValues) != n {
				t.Errorf("%s: %s has %d label values for %d keys", who, m.Name, len(m.LabelValues), n)
			}
			values[who+"/"+m.Name] = m.Value.GetValue()
		}
	}
	check(pm.Metrics, "pod")
	if len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != "c1" {
		t.Fatalf("container metrics: %v", pm.ContainerMetrics)
	}
	check(pm.ContainerMetrics[0].Metrics, "c1")
	for key, want := range map[string]uint64{
		"pod/container_cpu_usage_seconds_total":        3,
		"pod/container_network_receive_bytes_total":    10,
		"c1/container_memory_working_set_bytes":        80,
		"c1/container_fs_usage_bytes":                  4096,
		"c1/container_start_time_seconds":              5,
		"c1/container_spec_memory_limit_bytes":         1 << 20,
		"c1/container_cpu_cfs_periods_total":           7,
		"c1/container_cpu_cfs_throttled_seconds_total": 2,
		"c1/container_spec_cpu_quota":                  20000,
		"c1/container_spec_memory_swap_limit_bytes":    64 << 20,
		"c1/container_file_descriptors":                3,
		"pod/container_sockets":                        1,
		"pod/container_ulimits_soft":                   1024,
		"c1/container_last_seen":                       1000,
		"c1/container_fs_reads_bytes_total":            512,
	} {
		if values[key] != want {
			t.Errorf("%s = %d, want %d", key, values[key], want)
		}
	}
	for _, name := range wantSeries {
		if !seen[name] {
			t.Errorf("series %s missing", name)
		}
		if _, ok := keys[name]; !ok {
			t.Errorf("descriptor %s missing", name)
		}
	}
	if !slices.IsSorted(desc.Descriptors[0].LabelKeys) {
		t.Errorf("label keys not sorted: %v", desc.Descriptors[0].LabelKeys)
	}
}
