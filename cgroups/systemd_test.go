package cgroups

import "testing"

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
