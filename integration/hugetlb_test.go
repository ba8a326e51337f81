package integration

import (
	"os"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestHugepageLimitsWithoutController: the kubelet sends a hugepage limit
// (0 when unset) for every page size the machine has, whether or not a
// hugetlb cgroup controller is there; the container must start, as on
// containerd (tolerate_missing_hugetlb_controller). On a host without the
// controller, as this v1 development host, every kubelet pod failed before.
func TestHugepageLimitsWithoutController(t *testing.T) {
	// The page sizes the kubelet would send: those the kernel has.
	var limits []*runtimeapi.HugepageLimit
	for dir, size := range map[string]string{"hugepages-2048kB": "2MB", "hugepages-1048576kB": "1GB"} {
		if _, err := os.Stat("/sys/kernel/mm/hugepages/" + dir); err == nil {
			limits = append(limits, &runtimeapi.HugepageLimit{PageSize: size, Limit: 0})
		}
	}
	if len(limits) == 0 {
		t.Skip("the kernel has no huge page sizes")
	}
	d, image := readyDaemon(t)
	podCfg := podConfig("hugetlb", t.TempDir())
	run := runPod(t, d, podCfg)
	cfg := containerConfig("c", image, "sleep", "60")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{HugepageLimits: limits}}
	id := startContainer(t, d, run.PodSandboxId, podCfg, cfg)
	waitFor(t, 10*time.Second, "the container to run", func() bool {
		return containerStatus(t, d, id).State == runtimeapi.ContainerState_CONTAINER_RUNNING
	})
}
