package names

import (
	"errors"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestResolve(t *testing.T) {
	m := map[string]int{"abc111": 1, "abc222": 2, "def333": 3}
	for _, tc := range []struct {
		prefix, want string
		err          error
	}{
		{"abc111", "abc111", nil},
		{"d", "def333", nil},
		{"abc2", "abc222", nil},
		{"abc", "", ErrBadQuery}, // ambiguous
		{"", "", ErrBadQuery},
		{"xyz", "", ErrUnknown},
	} {
		got, err := Resolve(m, tc.prefix, "container")
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tc.prefix, got, err, tc.want, tc.err)
		}
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if err := r.Reserve("a", "1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Reserve("a", "1"); err != nil {
		t.Errorf("the owner reserving again: %v", err)
	}
	if err := r.Reserve("a", "2"); !errors.Is(err, ErrInUse) {
		t.Errorf("another ID reserving a held name: %v, want ErrInUse", err)
	}
	r.Release("a")
	if err := r.Reserve("a", "2"); err != nil {
		t.Errorf("after release: %v", err)
	}
}

func TestNames(t *testing.T) {
	pod := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns", Uid: "u1", Attempt: 2}}
	ctr := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: 1}}
	if got := Pod(pod); got != "web_ns_u1_2" {
		t.Errorf("Pod = %q", got)
	}
	if got := Container(pod, ctr); got != "app_web_ns_u1_1" {
		t.Errorf("Container = %q", got)
	}
	if got := PodLog(pod); got != "ns/web" {
		t.Errorf("PodLog = %q", got)
	}
	if id := NewID(); len(id) != 64 || id == NewID() {
		t.Errorf("NewID = %q", id)
	}
}
