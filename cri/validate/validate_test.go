package validate

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func goodPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "6f1c-uid"},
		Hostname:     "web",
		LogDirectory: "/var/log/pods/default_web_6f1c",
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10", "fd00::a"}, Searches: []string{"default.svc.cluster.local"}, Options: []string{"ndots:5"}},
		PortMappings: []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"}},
		Labels:       map[string]string{"io.kubernetes.pod.name": "web"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod6f1c",
			Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "net/ipv4/conf/all/forwarding": "1"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				RunAsUser: &runtimeapi.Int64Value{Value: 1000}, SupplementalGroups: []int64{1, 2},
				Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			},
			Resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 64 << 20},
		},
	}
}

func goodContainer() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: "app"},
		Image:      &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
		Command:    []string{"sh", "-c", "sleep 1"},
		WorkingDir: "/srv",
		Envs:       []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b=c")}},
		LogPath:    "app/0.log",
		Mounts:     []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/var/lib/kubelet/pods/x/volumes/data", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}},
		Devices:    []*runtimeapi.Device{{ContainerPath: "/dev/fuse", HostPath: "/dev/fuse", Permissions: "rwm"}},
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuQuota: -1, CpusetCpus: "0-1,3", OomScoreAdj: 1000, MemorySwapLimitInBytes: -1,
				HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Capabilities:  &runtimeapi.Capability{AddCapabilities: []string{"net_admin", "CAP_SYS_TIME"}, DropCapabilities: []string{"ALL"}, AddAmbientCapabilities: []string{"CAP_NET_BIND_SERVICE"}},
				RunAsUsername: "nobody",
				MaskedPaths:   []string{"/proc/kcore"},
				Apparmor:      &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-apparmor-example"},
			},
		},
	}
}

func TestValidateAcceptsKubeletRequests(t *testing.T) {
	for name, req := range map[string]any{
		"run pod":          &runtimeapi.RunPodSandboxRequest{Config: goodPod()},
		"create container": &runtimeapi.CreateContainerRequest{PodSandboxId: testID, Config: goodContainer(), SandboxConfig: goodPod()},
		"short ID":         &runtimeapi.ContainerStatusRequest{ContainerId: "0123abc"},
		"pull by digest":   &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox@sha256:" + testID}},
		"status by ID":     &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "sha256:" + testID}},
		"dual-stack CIDR":  &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.88.0.0/16,fd00::/64"}}},
		"exec":             &runtimeapi.ExecSyncRequest{ContainerId: testID, Cmd: []string{"ls"}, Timeout: 10},
		"port-forward":     &runtimeapi.PortForwardRequest{PodSandboxId: testID, Port: []int32{80, 65535}},
		"version":          &runtimeapi.VersionRequest{},
		"mount options (CRI 1.37)": &runtimeapi.CreateContainerRequest{PodSandboxId: testID, Config: func() *runtimeapi.ContainerConfig {
			c := goodContainer()
			c.Mounts[0].MountOptions = []string{"noexec", "nodev", "nosuid", "noatime"}
			return c
		}()},
	} {
		if err := Request(req); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	pod := func(f func(*runtimeapi.PodSandboxConfig)) any {
		c := goodPod()
		f(c)
		return &runtimeapi.RunPodSandboxRequest{Config: c}
	}
	ctr := func(f func(*runtimeapi.ContainerConfig)) any {
		c := goodContainer()
		f(c)
		return &runtimeapi.CreateContainerRequest{PodSandboxId: testID, Config: c}
	}
	sec := func(f func(*runtimeapi.LinuxContainerSecurityContext)) any {
		return ctr(func(c *runtimeapi.ContainerConfig) { f(c.Linux.SecurityContext) })
	}
	res := func(f func(*runtimeapi.LinuxContainerResources)) any {
		return ctr(func(c *runtimeapi.ContainerConfig) { f(c.Linux.Resources) })
	}
	cases := []struct {
		name, want string
		req        any
	}{
		{"nil pod config", "missing", &runtimeapi.RunPodSandboxRequest{}},
		{"no metadata", "metadata", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata = nil })},
		{"name with slash", "'/'", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "../../etc" })},
		{"dot-dot name", "not a name", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = ".." })},
		{"long uid", "limit", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = strings.Repeat("u", 300) })},
		{"newline name", "control", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\nb" })},
		{"relative log dir", "absolute", pod(func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "logs" })},
		{"log dir escape", `".."`, pod(func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/../../etc" })},
		{"huge annotations", "limit", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.Annotations = map[string]string{"a": strings.Repeat("x", 300<<10)}
		})},
		{"empty label key", "empty key", pod(func(c *runtimeapi.PodSandboxConfig) { c.Labels = map[string]string{"": "x"} })},
		{"DNS injection", "search domain", pod(func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a\nnameserver 6.6.6.6"} })},
		{"DNS server not IP", "not an IP", pod(func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"evil.example"} })},
		{"port 0", "container port", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].ContainerPort = 0 })},
		{"port 70000", "host port", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostPort = 70000 })},
		{"bad protocol", "protocol", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].Protocol = 9 })},
		{"bad host IP", "host IP", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostIp = "1.2.3" })},
		{"nil port mapping", "empty", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings = append(c.PortMappings, nil) })},
		{"sysctl escape", "component", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4/../../kernel/core_pattern": "|/x"}
		})},
		{"sysctl odd character", "plain name", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"net.core.a b": "1"} })},
		{"cgroup parent escape", "cgroup parent", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/../../sys" })},
		{"negative pod user", "run_as_user", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.RunAsUser.Value = -1 })},
		{"bad seccomp type", "profile type", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.Seccomp.ProfileType = 7 })},
		{"bad namespace mode", "namespace mode", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: 42}
		})},

		{"bad pod ID", "characters", &runtimeapi.CreateContainerRequest{PodSandboxId: "../x", Config: goodContainer()}},
		{"nil container config", "missing", &runtimeapi.CreateContainerRequest{PodSandboxId: testID}},
		{"no image", "no image", ctr(func(c *runtimeapi.ContainerConfig) { c.Image = nil })},
		{"bad image ref", "image reference", ctr(func(c *runtimeapi.ContainerConfig) { c.Image.Image = "UPPER/Case::x" })},
		{"NUL in command", "NUL", ctr(func(c *runtimeapi.ContainerConfig) { c.Command = []string{"sh\x00"} })},
		{"huge arg", "kernel", ctr(func(c *runtimeapi.ContainerConfig) { c.Args = []string{strings.Repeat("a", 200<<10)} })},
		{"huge env total", "together", ctr(func(c *runtimeapi.ContainerConfig) {
			for i := range 20 {
				c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: "K" + strings.Repeat("k", i), Value: []byte(strings.Repeat("v", 100<<10))})
			}
		})},
		{"env name with =", "'='", ctr(func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{{Key: "A=B"}} })},
		{"nil env", "empty entry", ctr(func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{nil} })},
		{"relative workdir", "absolute", ctr(func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "srv" })},
		{"log path escape", `".."`, ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../../etc/shadow" })},
		{"absolute log path", "relative", ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/shadow" })},
		{"mount dest escape", `".."`, ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "/data/../../etc" })},
		{"relative mount dest", "absolute", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "data" })},
		{"relative mount source", "absolute", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].HostPath = "etc" })},
		{"bad propagation", "propagation", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].Propagation = 5 })},
		{"nil mount", "empty", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts = []*runtimeapi.Mount{nil} })},
		{"unknown mount option", "mount option", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].MountOptions = []string{"nosuid", "mand"} })},
		{"ro as mount option", "own fields", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].MountOptions = []string{"ro"} })},
		{"propagation as mount option", "mount option", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].MountOptions = []string{"rshared"} })},
		{"empty mount option", "mount option", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].MountOptions = []string{""} })},
		{"device permissions", "permissions", ctr(func(c *runtimeapi.ContainerConfig) { c.Devices[0].Permissions = "rwx" })},
		{"relative device", "absolute", ctr(func(c *runtimeapi.ContainerConfig) { c.Devices[0].HostPath = "dev/sda" })},
		{"unknown capability", "not a Linux capability", sec(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities.AddCapabilities = []string{"CAP_GOD_MODE"}
		})},
		{"ambient ALL", "not a Linux capability", sec(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities.AddAmbientCapabilities = []string{"ALL"}
		})},
		{"username with colon", "run_as_username", sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsUsername = "root:root" })},
		{"uid -1", "run_as_user", sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsUser = &runtimeapi.Int64Value{Value: -1} })},
		{"uid 2^32-1", "run_as_user", sec(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.RunAsUser = &runtimeapi.Int64Value{Value: 1<<32 - 1}
		})},
		{"group 2^40", "supplemental", sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.SupplementalGroups = []int64{1 << 40} })},
		{"policy 9", "policy", sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.SupplementalGroupsPolicy = 9 })},
		{"masked relative", "absolute", sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.MaskedPaths = []string{"proc/kcore"} })},
		{"readonly escape", `".."`, sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.ReadonlyPaths = []string{"/proc/../etc"} })},
		{"localhost without ref", "names no profile", sec(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost}
		})},
		{"apparmor type 5", "profile type", sec(func(s *runtimeapi.LinuxContainerSecurityContext) { s.Apparmor.ProfileType = 5 })},
		{"negative memory", "memory_limit", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = -5 })},
		{"cpu period 1", "cpu_period", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = 1 })},
		{"cpu quota -7", "cpu_quota", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = -7 })},
		{"cpu shares 1e9", "cpu_shares", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 1e9 })},
		{"swap -2", "swap", res(func(r *runtimeapi.LinuxContainerResources) { r.MemorySwapLimitInBytes = -2 })},
		{"oom 5000", "oom_score_adj", res(func(r *runtimeapi.LinuxContainerResources) { r.OomScoreAdj = 5000 })},
		{"cpuset junk", "cpuset_cpus", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "0-;rm" })},
		{"hugepage size", "page size", res(func(r *runtimeapi.LinuxContainerResources) { r.HugepageLimits[0].PageSize = "../2MB" })},
		{"unified escape", "cgroup file", res(func(r *runtimeapi.LinuxContainerResources) { r.Unified = map[string]string{"../../release_agent": "x"} })},

		{"empty container ID", "empty", &runtimeapi.StartContainerRequest{}},
		{"long ID", "at most", &runtimeapi.RemoveContainerRequest{ContainerId: strings.Repeat("a", 200)}},
		{"ID with slash", "characters", &runtimeapi.StopPodSandboxRequest{PodSandboxId: "a/b"}},
		{"negative stop timeout", "negative", &runtimeapi.StopContainerRequest{ContainerId: testID, Timeout: -1}},
		{"empty exec", "empty", &runtimeapi.ExecSyncRequest{ContainerId: testID}},
		{"negative exec timeout", "negative", &runtimeapi.ExecSyncRequest{ContainerId: testID, Cmd: []string{"x"}, Timeout: -3}},
		{"port-forward 0", "port", &runtimeapi.PortForwardRequest{PodSandboxId: testID, Port: []int32{0}}},
		{"empty pull", "empty", &runtimeapi.PullImageRequest{}},
		{"pull whitespace", "image reference", &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busy box"}}},
		{"bad CIDR", "CIDR", &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.0.0.0/33"}}}},
		{"update negative", "memory", &runtimeapi.UpdateContainerResourcesRequest{ContainerId: testID, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}}},
	}
	for _, tc := range cases {
		err := Request(tc.req)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %q does not say %q", tc.name, err, tc.want)
		}
	}
}
