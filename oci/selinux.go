package oci

import (
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// selinuxEnabled is true when selinuxfs is mounted: the kernel enforces or
// audits SELinux labels.
func selinuxEnabled() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}

// setSELinux passes the kubelet's SELinux options as the process and mount
// labels when the host has SELinux; without it the options are ignored, as
// containerd and CRI-O do. Missing parts take the container defaults.
func setSELinux(spec *specs.Spec, o *runtimeapi.SELinuxOption) {
	if o == nil || (o.User == "" && o.Role == "" && o.Type == "" && o.Level == "") {
		return
	}
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	level := or(o.Level, "s0")
	spec.Process.SelinuxLabel = or(o.User, "system_u") + ":" + or(o.Role, "system_r") + ":" + or(o.Type, "container_t") + ":" + level
	spec.Linux.MountLabel = or(o.User, "system_u") + ":object_r:container_file_t:" + level
}
