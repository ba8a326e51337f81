package integration

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeHostPortConflictCode: a pod asking for a host port another pod
// holds is refused with FailedPrecondition naming the holder (it was
// Unknown), and the holder's mapping stays.
func TestEscapeHostPortConflictCode(t *testing.T) {
	d, _ := readyDaemon(t)
	c := ctx(t)
	port := int32(freeHostPort(t))
	holder := podConfig("port-holder", t.TempDir())
	holder.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: port}}
	held := runPod(t, d, holder).PodSandboxId
	thief := podConfig("port-thief", t.TempDir())
	thief.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: port, HostIp: "127.0.0.1"}}
	_, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: thief})
	if grpcCode(err) != "FailedPrecondition" || !strings.Contains(err.Error(), held) {
		t.Errorf("RunPodSandbox claiming a held host port = %v, want FailedPrecondition naming %s", err, held)
	}
	t.Logf("RunPodSandbox claiming a held host port: %v", err)
}
