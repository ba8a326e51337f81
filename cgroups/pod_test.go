package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ocgroups "github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodCgroup creates a real pod cgroup (under a relative parent, so
// inside the test's own cgroup), puts a process in its pause leaf, updates
// the limits live, reads stats and removes it. It runs on whichever cgroup
// version the machine has: v1 on the build host, v2 in ../shared/vm.
func TestPodCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	parent := "peapod-ut-" + hex.EncodeToString(b)
	podPath, err := PodPath(parent, "p1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		RemovePod(podPath)
		if paths, err := Paths(parent); err == nil {
			for _, p := range paths {
				os.Remove(p)
			}
		}
	})

	res := &runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: mib(64)}
	overhead := &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mib(16)}
	if err := CreatePod(podPath, PodLimits(res, overhead, SwapAccounted())); err != nil {
		t.Fatal(err)
	}
	paths, err := Paths(podPath)
	if err != nil {
		t.Fatal(err)
	}
	v2 := ocgroups.IsCgroup2UnifiedMode()
	if v2 {
		checkFiles(t, paths[""], map[string]string{"memory.max": str(mib(80)), "cpu.max": "50000 100000", "cpu.weight": "100"})
	} else {
		checkFiles(t, paths["memory"], map[string]string{"memory.limit_in_bytes": str(mib(80))})
		checkFiles(t, paths["cpu"], map[string]string{"cpu.cfs_quota_us": "50000", "cpu.shares": "1024"})
	}

	// A stand-in pause: a busy shell, so CPU usage moves.
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := AddPause(podPath, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	leaf := paths["memory"]
	if v2 {
		leaf = paths[""]
	}
	procs, _ := os.ReadFile(filepath.Join(leaf, pauseLeaf, "cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("pause leaf has %q, want pid %d", procs, cmd.Process.Pid)
	}

	first, err := ReadStats(paths)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var later Stats
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if later, err = ReadStats(paths); err != nil {
			t.Fatal(err)
		}
		if later.CPUUsageNanos > first.CPUUsageNanos+50_000_000 {
			break
		}
	}
	if later.CPUUsageNanos <= first.CPUUsageNanos+50_000_000 {
		t.Errorf("CPU usage did not grow 50ms in 10s: %d -> %d", first.CPUUsageNanos, later.CPUUsageNanos)
	}
	if later.MemoryUsage == 0 || later.MemoryLimit != uint64(mib(80)) {
		t.Errorf("memory: %+v", later)
	}
	if _, ok := paths["pids"]; (ok || v2) && later.Pids != 1 {
		t.Errorf("pids = %d, want 1", later.Pids)
	}

	res.MemoryLimitInBytes = mib(128)
	res.CpuQuota = 20000
	if err := UpdatePod(podPath, PodLimits(res, nil, SwapAccounted())); err != nil {
		t.Fatal(err)
	}
	if v2 {
		checkFiles(t, paths[""], map[string]string{"memory.max": str(mib(128)), "cpu.max": "20000 100000"})
	} else {
		checkFiles(t, paths["memory"], map[string]string{"memory.limit_in_bytes": str(mib(128))})
		checkFiles(t, paths["cpu"], map[string]string{"cpu.cfs_quota_us": "20000"})
	}

	cmd.Process.Kill()
	cmd.Wait()
	if err := RemovePod(podPath); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after RemovePod", p)
		}
	}
	if err := RemovePod(podPath); err != nil {
		t.Errorf("second RemovePod: %v", err)
	}
}
