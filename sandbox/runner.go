package sandbox

import (
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/peapod-cri/peapod/oci"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/peapod-cri/peapod/sandbox/runner"
)

// RunnerCommand is the argv[1] that makes the peapod binary a container
// runner (package runner): a short-lived process the pod's keeper forks to
// start one container.
const RunnerCommand = runner.Command

// RunnerMain is the runner's main in the peapod binary (runner.Main).
func RunnerMain(args []string) int { return runner.Main(args) }

// SeccompExportCommand is the argv[1] that makes the peapod binary (or the
// runner binary) load a seccomp filter for the daemon to read
// (runner.SeccompMain, fastexec.go).
const SeccompExportCommand = runner.SeccompCommand

// SeccompExportMain is runner.SeccompMain in the peapod binary.
func SeccompExportMain() int { return runner.SeccompMain() }

// RunnerBinary is the name of the small runner binary (cmd/peapod-runner)
// that the daemon uses when it is installed beside it.
const RunnerBinary = runner.Binary

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

// libcontainerConfig converts the OCI spec for libcontainer.
func libcontainerConfig(id string, spec *specs.Spec) (*configs.Config, error) {
	return runner.LibcontainerConfig(id, spec)
}

// newInitProcess is the container's first process as the spec describes it.
func newInitProcess(spec *specs.Spec) (*libcontainer.Process, error) {
	return runner.InitProcess(spec)
}
