package nri

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func baseSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}, Env: []string{"PATH=/bin", "KEEP=1"}},
		Linux:   &specs.Linux{Resources: &specs.LinuxResources{}},
	}
}

// TestAdjust: what a plugin may change lands in the spec; what peapod
// cannot honour or the daemon may not grant is refused with the reason.
func TestAdjust(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	own := 100
	s := &Server{host: hostFacts{oomScoreAdj: own}}

	adj := &api.ContainerAdjustment{}
	adj.AddEnv("NRI", "yes")
	adj.RemoveEnv("KEEP")
	adj.AddMount(&api.Mount{Source: dir, Destination: "/data", Type: "bind", Options: []string{"rbind", "ro"}})
	adj.AddAnnotation("a", "b")
	adj.AddHooks(&api.Hooks{Prestart: []*api.Hook{{Path: hook}}})
	low := -500
	adj.SetLinuxOomScoreAdj(&low)
	adj.SetLinuxMemoryLimit(64 << 20)
	adj.SetLinuxCPUShares(512)
	spec := baseSpec()
	if err := s.adjust(spec, adj); err != nil {
		t.Fatalf("adjust: %v", err)
	}
	if !slices.Contains(spec.Process.Env, "NRI=yes") || slices.Contains(spec.Process.Env, "KEEP=1") {
		t.Errorf("env %v: want NRI=yes added and KEEP removed", spec.Process.Env)
	}
	if len(spec.Mounts) != 1 || spec.Mounts[0].Destination != "/data" || spec.Annotations["a"] != "b" {
		t.Errorf("mounts %v annotations %v", spec.Mounts, spec.Annotations)
	}
	if spec.Hooks == nil || len(spec.Hooks.Prestart) != 1 { //nolint:staticcheck // the OCI field NRI sets
		t.Errorf("hooks %+v", spec.Hooks)
	}
	if got := *spec.Process.OOMScoreAdj; got != own {
		t.Errorf("oom_score_adj %d: want raised to the daemon's %d", got, own)
	}
	if got := *spec.Linux.Resources.Memory.Limit; got != 64<<20 {
		t.Errorf("memory limit %d", got)
	}
	if got := *spec.Linux.Resources.CPU.Shares; got != 512 {
		t.Errorf("cpu shares %d", got)
	}

	refused := map[string]func(*api.ContainerAdjustment){
		"cgroups path": func(a *api.ContainerAdjustment) { a.SetLinuxCgroupsPath("/elsewhere") },
		"namespaces":   func(a *api.ContainerAdjustment) { a.AddOrReplaceNamespace(&api.LinuxNamespace{Type: "network", Path: "/proc/1/ns/net"}) },
		"RDT":          func(a *api.ContainerAdjustment) { a.SetLinuxRDTClass("gold") },
		"block I/O":    func(a *api.ContainerAdjustment) { a.SetLinuxBlockIOClass("slow") },
		"bind mount source": func(a *api.ContainerAdjustment) {
			a.AddMount(&api.Mount{Source: filepath.Join(dir, "missing"), Destination: "/x", Type: "bind"})
		},
		"mount destination": func(a *api.ContainerAdjustment) {
			a.AddMount(&api.Mount{Source: dir, Destination: "/x/../../etc", Type: "bind"})
		},
		"hook": func(a *api.ContainerAdjustment) {
			a.AddHooks(&api.Hooks{Poststart: []*api.Hook{{Path: "relative"}}})
		},
		"RLIMIT_NOFILE": func(a *api.ContainerAdjustment) { a.AddRlimit("RLIMIT_NOFILE", 1<<50, 1) },
	}
	for want, set := range refused {
		a := &api.ContainerAdjustment{}
		set(a)
		err := s.adjust(baseSpec(), a)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a refusal naming it", want, err)
		}
	}
}

// TestMergeUpdate: a plugin's resources replace only the fields they set.
func TestMergeUpdate(t *testing.T) {
	base := &runtimeapi.LinuxContainerResources{CpuShares: 2, MemoryLimitInBytes: 100, CpusetCpus: "0", Unified: map[string]string{"a": "1"}}
	got := mergeUpdate(base, &api.LinuxResources{
		Memory:  &api.LinuxMemory{Limit: api.Int64(int64(200))},
		Cpu:     &api.LinuxCPU{Cpus: "1"},
		Unified: map[string]string{"b": "2"},
	})
	if got.CpuShares != 2 || got.MemoryLimitInBytes != 200 || got.CpusetCpus != "1" || got.Unified["a"] != "1" || got.Unified["b"] != "2" {
		t.Errorf("merged %v", got)
	}
	if base.MemoryLimitInBytes != 100 || len(base.Unified) != 1 {
		t.Errorf("base changed: %v", base)
	}
	if back := mergeUpdate(nil, nriResources(base)); back.CpuShares != 2 || back.MemoryLimitInBytes != 100 || back.CpusetCpus != "0" {
		t.Errorf("CRI → NRI → CRI: %v", back)
	}
}
