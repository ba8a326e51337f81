package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeSysctlHostUTS: a hostNetwork pod has the host's UTS namespace,
// so kernel.hostname and kernel.domainname in its sysctls would rename the
// node. RunPodSandbox refuses them with InvalidArgument naming the key, the
// node keeps its names, and nothing of the pod is left.
func TestEscapeSysctlHostUTS(t *testing.T) {
	hostName, domainName := readSysctl(t, "kernel/hostname"), readSysctl(t, "kernel/domainname")
	// Put the names back whatever happens (the old code wrote them).
	t.Cleanup(func() {
		if got := readSysctl(t, "kernel/hostname"); got != hostName {
			unix.Sethostname([]byte(hostName))
		}
		if got := readSysctl(t, "kernel/domainname"); got != domainName {
			unix.Setdomainname([]byte(domainName))
		}
	})
	d := newDaemon(t, "127.0.0.1:1") // no image is pulled
	d.Start()
	for _, key := range []string{"kernel.hostname", "kernel.domainname"} {
		cfg := podConfig("sysctl-"+strings.TrimPrefix(key, "kernel."), filepath.Join(d.Dir, "logs"))
		cfg.Linux.Sysctls = map[string]string{key: "pwned"}
		cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}
		_, err := d.RT.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), key) {
			t.Errorf("hostNetwork pod with %s: err = %v, want InvalidArgument naming the key", key, err)
		}
	}
	if got := readSysctl(t, "kernel/hostname"); got != hostName {
		t.Errorf("the node's hostname changed from %q to %q", hostName, got)
	}
	if got := readSysctl(t, "kernel/domainname"); got != domainName {
		t.Errorf("the node's domainname changed from %q to %q", domainName, got)
	}
	resp, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Items) != 0 {
		t.Errorf("refused pods are listed: %v", resp.Items)
	}
	if left, _ := os.ReadDir(filepath.Join(d.State, "pods")); len(left) != 0 {
		t.Errorf("refused pods left directories: %v", left)
	}

	// The same keys are fine where the pod has its own UTS namespace, and
	// only there.
	cfg := podConfig("sysctl-uts-own", filepath.Join(d.Dir, "logs"))
	cfg.Linux.Sysctls = map[string]string{"kernel.domainname": "pod.example"}
	pod := runPod(t, d, cfg).PodSandboxId
	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if got := readSysctl(t, "kernel/domainname"); got != domainName {
		t.Errorf("a pod's own domainname reached the node: %q", got)
	}
}

func readSysctl(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
