package sandbox

import (
	"errors"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func usernsPod(ns *runtimeapi.NamespaceOption) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
	}}
}

func TestValidateUserns(t *testing.T) {
	m := func(c, h, l uint32) []*runtimeapi.IDMapping {
		return []*runtimeapi.IDMapping{{ContainerId: c, HostId: h, Length: l}}
	}
	pod := func(u, g []*runtimeapi.IDMapping) *runtimeapi.UserNamespace {
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: u, Gids: g}
	}
	ok := pod(m(0, 65536, 65536), m(0, 65536, 65536))
	for name, tc := range map[string]struct {
		ns   *runtimeapi.NamespaceOption
		fail bool
	}{
		"none":             {nil, false},
		"node":             {&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}}, false},
		"pod":              {&runtimeapi.NamespaceOption{UsernsOptions: ok}, false},
		"pod, pid per ctr": {&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER, UsernsOptions: ok}, false},
		"two ranges":       {&runtimeapi.NamespaceOption{UsernsOptions: pod(append(m(0, 1, 1), m(1, 2, 1)...), m(0, 1, 2))}, true},
		"no uid 0":         {&runtimeapi.NamespaceOption{UsernsOptions: pod(m(1, 1000, 10), m(0, 1000, 10))}, true},
		"empty":            {&runtimeapi.NamespaceOption{UsernsOptions: pod(m(0, 1000, 0), m(0, 1000, 10))}, true},
		"overflow":         {&runtimeapi.NamespaceOption{UsernsOptions: pod(m(0, 1<<32-10, 65536), m(0, 1000, 10))}, true},
		"host root":        {&runtimeapi.NamespaceOption{UsernsOptions: pod(m(0, 0, 65536), m(0, 0, 65536))}, true},
		"container":        {&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}}, true},
		"target":           {&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}}, true},
		"host ipc":         {&runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE, UsernsOptions: ok}, true},
		"node with ranges": {&runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: m(0, 1, 1)}}, true},
	} {
		err := validateUserns(usernsPod(tc.ns))
		if tc.fail != (err != nil) || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("%s: validateUserns = %v, want failure %v (InvalidArgument)", name, err, tc.fail)
		}
	}
}

func TestIDMapLines(t *testing.T) {
	got := idMapLines([]*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}})
	if got != "0 100000 65536\n" {
		t.Errorf("idMapLines = %q", got)
	}
}
