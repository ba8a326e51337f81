package sandbox

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/cgroups"
)

// RunnerCommand is the argv[1] that makes the peapod binary a container
// runner: a short-lived process the pod's keeper forks to start one
// container. The runner creates the container with libcontainer, reports
// the init's PID and exits, so that the init is re-parented to the keeper,
// which holds its stdio and records its exit (docs/design.md).
const RunnerCommand = "container-start"

// Descriptors the keeper gives the runner besides stdio.
const (
	runnerResultFD = 3 // "ok <pid>\n" or "error <message>\n"
	runnerTTYFD    = 4 // unix socket for the terminal master (TTY only)
)

// RunnerMain is the runner's main: args are the libcontainer root, the
// bundle directory, the container ID and the daemon's PID. It returns the
// exit status.
func RunnerMain(args []string) int {
	result := os.NewFile(runnerResultFD, "result")
	if result == nil || len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: peapod container-start ROOT BUNDLE ID DAEMON_PID (started by the pod's keeper)")
		return 2
	}
	// Resolve relative cgroup paths as the daemon does, not below the
	// keeper's cgroup, where the keeper forked us (0: no need, runnerJoins).
	daemon, err := strconv.Atoi(args[3])
	if err == nil && daemon != 0 {
		err = cgroups.JoinCgroupsOf(daemon)
	}
	if err != nil {
		fmt.Fprintf(result, "error join the daemon's cgroups: %s\n", err)
		return 1
	}
	// stdout and stderr are the container's: libcontainer's messages must
	// not end up in its log.
	logrus.SetOutput(io.Discard)
	pid, err := runContainerProcess(args[0], args[1], args[2])
	if err != nil {
		fmt.Fprintf(result, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	fmt.Fprintf(result, "ok %d\n", pid)
	return 0
}

func runContainerProcess(root, bundle, id string) (int, error) {
	spec, err := readSpec(bundle)
	if err != nil {
		return 0, err
	}
	cfg, err := libcontainerConfig(id, spec)
	if err != nil {
		return 0, err
	}
	if stale, err := libcontainer.Load(root, id); err == nil {
		stale.Destroy() // left by a start that failed half-way
	}
	lc, err := libcontainer.Create(root, id, cfg)
	if err != nil {
		return 0, fmt.Errorf("create container state: %w", err)
	}
	proc, err := newInitProcess(spec)
	if err != nil {
		lc.Destroy()
		return 0, err
	}
	var consoleParent *os.File
	if spec.Process.Terminal {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			lc.Destroy()
			return 0, fmt.Errorf("console socket: %w", err)
		}
		consoleParent = os.NewFile(uintptr(fds[0]), "console-parent")
		defer consoleParent.Close()
		child := os.NewFile(uintptr(fds[1]), "console-child")
		defer child.Close()
		proc.ConsoleSocket = child
	} else {
		proc.Stdin, proc.Stdout, proc.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	if err := lc.Run(proc); err != nil {
		lc.Destroy()
		return 0, fmt.Errorf("run container process: %w", err)
	}
	if consoleParent != nil {
		master, err := utils.RecvFile(consoleParent)
		if err == nil {
			err = sendFD(runnerTTYFD, master)
			master.Close()
		}
		if err != nil {
			proc.Signal(unix.SIGKILL)
			lc.Destroy()
			return 0, fmt.Errorf("hand the terminal to the keeper: %w", err)
		}
	}
	return proc.Pid()
}

// sendFD passes f over the unix socket at fd sock with one byte of data.
func sendFD(sock int, f *os.File) error {
	return unix.Sendmsg(sock, []byte{'t'}, unix.UnixRights(int(f.Fd())), nil, 0)
}

// runnerJoins is the runner's last argument: the PID whose cgroups it
// joins before it creates the container, the daemon's, so that a relative
// cgroup path resolves as the daemon resolves it; or "0", join nothing.
// An absolute cgroupfs path (kubelet's) resolves the same from anywhere,
// so the runner then stays in the pod's cgroup, where the keeper forked
// it, and skips a migration per cgroup v1 hierarchy (10-20 ms of
// StartContainer on a busy 2-core host). Not when the pod's cgroup has a
// memory or PID limit, which the short-lived Go runner would count against.
func (r *Runtime) runnerJoins(p *Pod) string {
	if r.opts.CgroupDriver != "systemd" && strings.HasPrefix(p.CgroupParent, "/") && !limitsMemoryOrPids(podLimits(p.Config.GetLinux())) {
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
