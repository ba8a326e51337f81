package sandbox

import (
	"github.com/peapod-cri/peapod/oci"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runnerJoins is the runner's last argument: the PID whose cgroups it
// joins before it creates the container, the daemon's, so that a relative
// cgroup path resolves as the daemon resolves it; or "0", join nothing.
// An absolute cgroupfs path (kubelet's) resolves the same from anywhere,
// so the runner then stays in the pod's cgroup, where the keeper forked
// it, and skips a migration per cgroup v1 hierarchy (10-20 ms of
// StartContainer on a busy 2-core host). Not when the pod's cgroup has a
// memory or PID limit, which the short-lived Go runner would count against.
func (r *Runtime) runnerJoins(p *Pod) string {
	if r.opts.CgroupDriver != "systemd" && strings.HasPrefix(p.CgroupParent, "/") && !limitsMemoryOrPids(oci.PodLimits(p.Config.GetLinux())) {
		return "0"
	}
	return strconv.Itoa(os.Getpid())
}

func limitsMemoryOrPids(res *specs.LinuxResources) bool {
	if res == nil {
		return false
	}
	return (res.Memory != nil && res.Memory.Limit != nil && *res.Memory.Limit > 0) || (res.Pids != nil && res.Pids.Limit != nil && *res.Pids.Limit > 0)
}
