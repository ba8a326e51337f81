package oci

import (
	"errors"
	"strings"
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
		err := ValidateUserns(usernsPod(tc.ns))
		if tc.fail != (err != nil) || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("%s: validateUserns = %v, want failure %v (InvalidArgument)", name, err, tc.fail)
		}
	}
}

func TestIDMapLines(t *testing.T) {
	got := IDMapLines([]*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}})
	if got != "0 100000 65536\n" {
		t.Errorf("idMapLines = %q", got)
	}
}

func TestResolvConf(t *testing.T) {
	got, err := ResolvConf(&runtimeapi.DNSConfig{Servers: []string{"1.1.1.1", "8.8.8.8"}, Searches: []string{"a.svc", "b"}, Options: []string{"ndots:5"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "search a.svc b\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:5\n"
	if string(got) != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
}

func TestValidatePodConfig(t *testing.T) {
	meta := &runtimeapi.PodSandboxMetadata{Name: "n", Namespace: "ns", Uid: "u"}
	hostNet := &runtimeapi.LinuxPodSandboxConfig{
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}},
		Sysctls:         map[string]string{"net.ipv4.ip_forward": "1"},
	}
	for _, tc := range []struct {
		name string
		cfg  *runtimeapi.PodSandboxConfig
		ok   bool
	}{
		{"good", &runtimeapi.PodSandboxConfig{Metadata: meta}, true},
		{"nil", nil, false},
		{"no uid", &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "n", Namespace: "ns"}}, false},
		{"long hostname", &runtimeapi.PodSandboxConfig{Metadata: meta, Hostname: strings.Repeat("x", 65)}, false},
		{"net sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: hostNet}, false},
		{"not namespaced sysctl", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"vm.swappiness": "1"}}}, false},
		{"ipc sysctl", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"kernel.shmmax": "1"}}}, true},
		{"uts sysctl", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"kernel.domainname": "d"}}}, true},
		{"hostname sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: hostNet.SecurityContext, Sysctls: map[string]string{"kernel.hostname": "pwned"}}}, false},
		{"domainname sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: hostNet.SecurityContext, Sysctls: map[string]string{"kernel.domainname": "pwned"}}}, false},
		{"slashed uts sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: hostNet.SecurityContext, Sysctls: map[string]string{"kernel/hostname": "pwned"}}}, false},
	} {
		err := ValidatePod(tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v is not ErrInvalidArgument", tc.name, err)
		}
	}
}
