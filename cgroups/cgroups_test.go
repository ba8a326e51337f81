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
