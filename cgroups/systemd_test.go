package cgroups

import (
	"path"
	"strings"
	"testing"
)

// The units the systemd driver asks systemd for, from the cgroupfs paths
// the rest of peapod works with.
func TestUnitOf(t *testing.T) {
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu1.slice/kubepods-burstable-podu1-peapod_pod_abc.slice"
	for _, tc := range []struct {
		path, parent, prefix, name string
	}{
		{pod, "kubepods-burstable-podu1.slice", "", "kubepods-burstable-podu1-peapod_pod_abc.slice"},
		{pod + "/cri-peapod-abc.scope", "kubepods-burstable-podu1-peapod_pod_abc.slice", "cri-peapod", "abc"},
		{"/peapod_pod_x.slice", "-.slice", "", "peapod_pod_x.slice"},
	} {
		cg, err := unitOf(tc.path, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if !cg.Systemd || cg.Parent != tc.parent || cg.ScopePrefix != tc.prefix || cg.Name != tc.name {
			t.Errorf("%s: systemd %v parent %q prefix %q name %q, want parent %q prefix %q name %q",
				tc.path, cg.Systemd, cg.Parent, cg.ScopePrefix, cg.Name, tc.parent, tc.prefix, tc.name)
		}
	}
	if _, err := unitOf(pod+"/other.scope", nil); err == nil {
		t.Error("a scope not named cri-peapod-<id>.scope was accepted")
	}
	if got, want := pauseUnitPath(pod), pod+"/cri-peapod-abc.scope"; got != want {
		t.Errorf("pause scope %q, want %q", got, want)
	}
	for p, want := range map[string]bool{
		pod + "/cri-peapod-abc.scope":        true,
		pod + "/cri-peapod-ctr1.scope":       false, // a container's scope
		pod + "/peapod-pause.scope":          true,
		"/peapod-it-1/peapod-pod-abc/pause":  true,
		"/system.slice/cri-peapod-abc.scope": false,
	} {
		if got := isPauseLeaf(p); got != want {
			t.Errorf("isPauseLeaf(%s) = %v, want %v", p, got, want)
		}
	}
	for p, want := range map[string]bool{
		"kubepods-pod1.slice:cri-peapod:abc":       true,
		"/kubepods.slice/x.slice/peapod-abc.scope": false,
		"peapod-it-1/peapod-pod-abc/peapod-c":      false,
	} {
		if got := IsSystemdCgroupsPath(p); got != want {
			t.Errorf("IsSystemdCgroupsPath(%s) = %v, want %v", p, got, want)
		}
	}
}

// TestSystemdScopePath: the cgroupsPath an external runtime is given under
// the systemd driver leads back to the scope below the pod's slice, where
// stats and OOM kills are read (it was read as a cgroupfs path, "/slice:
// prefix:name", and the container had no stats: seen with crun in the
// cgroup v2 guest).
func TestSystemdScopePath(t *testing.T) {
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu1.slice/kubepods-burstable-podu1-peapod_pod_abc.slice"
	for _, tc := range []struct{ in, want string }{
		{path.Base(pod) + ":" + ScopePrefix + ":c1", pod + "/" + ScopePrefix + "-c1.scope"},
		{"peapodit1.slice:cri-peapod:c2", "/peapodit1.slice/cri-peapod-c2.scope"},
		{"system.slice::x.slice", "/system.slice/x.slice"},
	} {
		got, err := SystemdScopePath(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("SystemdScopePath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		paths, err := Paths(tc.in)
		if err != nil {
			t.Errorf("Paths(%q): %v", tc.in, err)
		}
		for _, p := range paths {
			if !strings.HasSuffix(p, tc.want) {
				t.Errorf("Paths(%q) has %q, want it to end in %q", tc.in, p, tc.want)
			}
		}
	}
	for _, bad := range []string{":cri-peapod:c1", "a.slice:p:", "a:b"} {
		if _, err := SystemdScopePath(bad); err == nil {
			t.Errorf("SystemdScopePath(%q) accepted", bad)
		}
	}
}
