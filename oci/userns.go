package oci

import (
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodUserns returns the pod's user namespace options when it asks for a
// user namespace of its own, else nil.
func PodUserns(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.UserNamespace {
	u := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if u.GetMode() != runtimeapi.NamespaceMode_POD {
		return nil
	}
	return u
}

// IDMappings converts CRI mappings to OCI ones.
func IDMappings(list []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	var out []specs.LinuxIDMapping
	for _, m := range list {
		out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	return out
}

// UsernsPath is the user namespace the pod's containers join, named by
// the pod's holder process.
func UsernsPath(holder int) string {
	return "/proc/" + strconv.Itoa(holder) + "/ns/user"
}
