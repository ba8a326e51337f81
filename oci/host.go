package oci

import (
	"os"
	"strconv"
	"strings"

	"github.com/moby/sys/capability"
	"github.com/opencontainers/cgroups"

	peapodcgroups "github.com/peapod-cri/peapod/cgroups"
)

// Host is what a spec takes from the machine rather than from the
// request. HostFacts reads it once per spec; unit tests give their own, so
// that the translation runs anywhere, without root.
type Host struct {
	// Bounding is the daemon's capability bounding set: "all
	// capabilities" means these, and a container gets no others.
	Bounding []string
	// CgroupV2 gives each container a private cgroup namespace (on v1 the
	// kubelet expects none).
	CgroupV2 bool
	// SwapAccounted lets a memory limit also limit swap.
	SwapAccounted bool
	// OOMScoreAdj is the daemon's own: a container's is never lower, as
	// lowering it needs CAP_SYS_RESOURCE.
	OOMScoreAdj int
	// SELinux is whether the kernel labels processes and files; without
	// it SELinux options are ignored, as containerd does.
	SELinux bool
	// AppArmor is the host's AppArmor; nil for none.
	AppArmor AppArmor
	// MountOf finds the mount holding a host path and its propagation
	// fields ("shared:N", "master:N"), from /proc/self/mountinfo.
	MountOf func(path string) (mountPoint, optional string, err error)
}

// HostFacts reads the Host of the machine peapod runs on.
func HostFacts() Host {
	return Host{
		Bounding:      boundingSet(),
		CgroupV2:      cgroups.IsCgroup2UnifiedMode(),
		SwapAccounted: peapodcgroups.SwapAccounted(),
		OOMScoreAdj:   ownOOMScoreAdj(),
		SELinux:       selinuxEnabled(),
		AppArmor:      systemAppArmor,
		MountOf:       hostMountOf,
	}
}

func (h Host) mountOf(path string) (string, string, error) {
	if h.MountOf == nil {
		return hostMountOf(path)
	}
	return h.MountOf(path)
}

// boundingSet lists the capabilities in the daemon's own bounding set.
func boundingSet() []string {
	caps, err := capability.NewPid2(0)
	if err == nil {
		err = caps.Load()
	}
	var out []string
	for _, c := range capability.ListKnown() {
		if err != nil || caps.Get(capability.BOUNDING, c) {
			out = append(out, "CAP_"+strings.ToUpper(c.String()))
		}
	}
	return out
}

func ownOOMScoreAdj() int {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return v
}
