// Package runner is the container runner: the short-lived process a pod's
// keeper forks to start one container. It creates the container with
// runc's libcontainer, reports the init's PID and exits, so that the init
// is re-parented to the keeper, which holds its stdio and records its exit
// (docs/design.md).
//
// The package imports libcontainer and the OCI spec, nothing of the
// daemon, so that cmd/peapod-runner, a small binary of this package and
// libcontainer's init, starts in a third of the CPU time the peapod binary
// takes (3.9 vs 11.2 ms, 15 vs 155 context switches, measured with perf
// stat): it runs twice per StartContainer, as the runner and as the
// container's init. The peapod binary runs it too, where no peapod-runner
// is installed beside it.
package runner

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	ocgroups "github.com/opencontainers/cgroups"
	_ "github.com/opencontainers/cgroups/devices" // lets the cgroup manager apply device rules
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runc/libcontainer/utils"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Command is the argv[1] that makes a binary (peapod or peapod-runner) a
// container runner.
const Command = "container-start"

// Descriptors the keeper gives the runner besides stdio.
const (
	resultFD = 3 // "ok <pid>\n" or "error <message>\n"
	ttyFD    = 4 // unix socket for the terminal master (TTY only)
)

// Main is the runner's main: args are the libcontainer root, the bundle
// directory, the container ID and the PID whose cgroups to join first (0:
// none). It returns the exit status.
func Main(args []string) int {
	result := os.NewFile(resultFD, "result")
	if result == nil || len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: "+Command+" ROOT BUNDLE ID DAEMON_PID (started by the pod's keeper)")
		return 2
	}
	// Resolve relative cgroup paths as the daemon does, not below the
	// keeper's cgroup, where the keeper forked us (0: no need).
	holder, err := takeHolderNamespaces()
	if err != nil {
		fmt.Fprintf(result, "error %s\n", err)
		return 1
	}
	daemon, err := strconv.Atoi(args[3])
	if err == nil && daemon != 0 {
		err = joinCgroupsOf(daemon)
	}
	if err != nil {
		fmt.Fprintf(result, "error join the daemon's cgroups: %s\n", err)
		return 1
	}
	// stdout and stderr are the container's: libcontainer's messages must
	// not end up in its log.
	logrus.SetOutput(io.Discard)
	pid, err := run(args[0], args[1], args[2], holder)
	if err != nil {
		fmt.Fprintf(result, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	fmt.Fprintf(result, "ok %d\n", pid)
	return 0
}

// run creates and starts the container; it returns the init's PID.
func run(root, bundle, id string, holder holderNamespaces) (int, error) {
	spec, err := ReadSpec(bundle)
	if err != nil {
		return 0, err
	}
	holdStart(spec)
	if err := holder.rewrite(spec); err != nil {
		return 0, err
	}
	cfg, err := LibcontainerConfig(id, spec)
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
	proc, err := InitProcess(spec)
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
	if restoring, err := HasRestoreImages(bundle); err != nil {
		lc.Destroy()
		return 0, err
	} else if restoring {
		if consoleParent != nil {
			lc.Destroy()
			return 0, fmt.Errorf("restore: a container with a terminal cannot be restored")
		}
		if err := restore(lc, bundle, proc); err != nil {
			lc.Destroy()
			return 0, err
		}
		return proc.Pid()
	}
	if err := lc.Run(proc); err != nil {
		lc.Destroy()
		return 0, fmt.Errorf("run container process: %w", err)
	}
	if consoleParent != nil {
		master, err := utils.RecvFile(consoleParent)
		if err == nil {
			err = sendFD(ttyFD, master)
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

// LibcontainerConfig converts the OCI spec for libcontainer. A cgroupsPath
// in runc's systemd form (slice:prefix:name, given under a live systemd)
// makes libcontainer create the container's scope through D-Bus.
func LibcontainerConfig(id string, spec *specs.Spec) (*configs.Config, error) {
	// The daemon's cgroups.IsSystemdCgroupsPath; this package imports
	// nothing of the daemon.
	systemd := spec.Linux != nil && !strings.Contains(spec.Linux.CgroupsPath, "/") && strings.Count(spec.Linux.CgroupsPath, ":") == 2
	return specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:       id,
		Spec:             spec,
		UseSystemdCgroup: systemd,
	})
}

// InitProcess is the container's first process as the spec describes it.
func InitProcess(spec *specs.Spec) (*libcontainer.Process, error) {
	p := spec.Process
	if p == nil {
		return nil, fmt.Errorf("OCI spec has no process")
	}
	proc := &libcontainer.Process{
		Args: p.Args,
		Env:  p.Env,
		Cwd:  p.Cwd,
		UID:  int(p.User.UID),
		GID:  int(p.User.GID),
		Init: true,
		// runc 1.5's specconv no longer copies the profile into the
		// container's config: without it here the container ran
		// unconfined whatever profile the spec named.
		AppArmorProfile: p.ApparmorProfile,
	}
	for _, g := range p.User.AdditionalGids {
		proc.AdditionalGroups = append(proc.AdditionalGroups, int(g))
	}
	return proc, nil
}

// joinCgroupsOf moves the calling process into the cgroups of pid in every
// hierarchy, so that relative cgroup paths resolve below them.
func joinCgroupsOf(pid int) error {
	paths, err := ocgroups.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return fmt.Errorf("read cgroups of %d: %w", pid, err)
	}
	self := os.Getpid()
	if ocgroups.IsCgroup2UnifiedMode() {
		return ocgroups.WriteCgroupProc(path.Join("/sys/fs/cgroup", paths[""]), self)
	}
	for subsystem, p := range paths {
		if subsystem == "" {
			continue // the hybrid cgroup2 mount holds no controllers here
		}
		mnt, err := ocgroups.FindCgroupMountpoint("", subsystem)
		if err != nil {
			continue // not mounted: nothing to join
		}
		if err := ocgroups.WriteCgroupProc(path.Join(mnt, p), self); err != nil {
			return fmt.Errorf("join %s cgroup %s: %w", subsystem, p, err)
		}
	}
	return nil
}

// SetLimits writes the spec's cgroup limits to the running container lc
// (loaded from libcontainer's state root when nil). The device rules are
// left alone: an update does not change them.
func SetLimits(root, id string, lc *libcontainer.Container, spec *specs.Spec) error {
	if lc == nil {
		var err error
		if lc, err = libcontainer.Load(root, id); err != nil {
			return fmt.Errorf("load container state: %w", err)
		}
	}
	want, err := LibcontainerConfig(id, spec)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	cfg := lc.Config()
	cg := *cfg.Cgroups
	cg.Resources = want.Cgroups.Resources
	cg.Resources.SkipDevices = true
	cfg.Cgroups = &cg
	if err := lc.Set(cfg); err != nil {
		return fmt.Errorf("set cgroup limits: %w", err)
	}
	return nil
}

// ErrBadSpec: libcontainer refuses the spec.
var ErrBadSpec = errors.New("spec refused by libcontainer")
