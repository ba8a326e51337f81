package cri

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

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
	pm := podMetrics(st)
	values := map[string]uint64{}
	check := func(ms []*runtimeapi.Metric, who string) {
		for _, m := range ms {
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
		"pod/container_cpu_usage_seconds_total":     3,
		"pod/container_network_receive_bytes_total": 10,
		"c1/container_memory_working_set_bytes":     80,
		"c1/container_fs_usage_bytes":               4096,
		"c1/container_start_time_seconds":           5,
		"c1/container_spec_memory_limit_bytes":      1 << 20,
	} {
		if values[key] != want {
			t.Errorf("%s = %d, want %d", key, values[key], want)
		}
	}
}
