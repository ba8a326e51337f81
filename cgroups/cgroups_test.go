package cgroups

import "testing"

func TestContainerPath(t *testing.T) {
	for _, tc := range []struct{ parent, want string }{
		{"/kubepods/burstable/pod1", "/kubepods/burstable/pod1/peapod-c1"},
		{"test-parent", "test-parent/peapod-c1"},
		{"", "peapod-c1"},
		{"/peapod/", "/peapod/peapod-c1"},
	} {
		if got := ContainerPath(tc.parent, "c1"); got != tc.want {
			t.Errorf("ContainerPath(%q) = %q, want %q", tc.parent, got, tc.want)
		}
	}
}

func TestIsSystemdSlice(t *testing.T) {
	if !IsSystemdSlice("kubepods-burstable-pod1.slice") || IsSystemdSlice("/kubepods/burstable") {
		t.Fatal("slice detection wrong")
	}
}

// TestSystemdPaths: kubelet's systemd driver names slices; without systemd
// peapod manages the directories systemd would make for them.
func TestSystemdPaths(t *testing.T) {
	const pod = "p1"
	for _, tc := range []struct{ parent, pod, container string }{
		{"kubepods-burstable-pod1234_5678.slice",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/kubepods-burstable-pod1234_5678-peapod_pod_p1.slice",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/kubepods-burstable-pod1234_5678-peapod_pod_p1.slice/peapod-c1.scope"},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice/kubepods-besteffort-podab-peapod_pod_p1.slice",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice/kubepods-besteffort-podab-peapod_pod_p1.slice/peapod-c1.scope"},
		{"kubepods.slice", "/kubepods.slice/kubepods-peapod_pod_p1.slice", "/kubepods.slice/kubepods-peapod_pod_p1.slice/peapod-c1.scope"},
		{"-.slice", "/peapod_pod_p1.slice", "/peapod_pod_p1.slice/peapod-c1.scope"},
		{"/kubepods/burstable/pod1", "/kubepods/burstable/pod1/peapod-pod-p1", "/kubepods/burstable/pod1/peapod-pod-p1/peapod-c1"},
	} {
		got, err := PodPath(tc.parent, pod)
		if err != nil || got != tc.pod {
			t.Errorf("PodPath(%q) = %q, %v; want %q", tc.parent, got, err, tc.pod)
			continue
		}
		if c := ContainerPath(got, "c1"); c != tc.container {
			t.Errorf("ContainerPath(%q) = %q, want %q", got, c, tc.container)
		}
	}
	for _, bad := range []string{"kubepods--burstable.slice", "-kubepods.slice", ".slice"} {
		if p, err := PodPath(bad, pod); err == nil {
			t.Errorf("PodPath(%q) = %q, want an error", bad, p)
		}
	}
	if p, _ := SlicePath("kubepods-burstable-pod1.slice"); p != "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice" {
		t.Errorf("SlicePath = %q", p)
	}
}
