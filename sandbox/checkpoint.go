package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/sandbox/proc"
	"github.com/peapod-cri/peapod/sandbox/runner"
)

// CheckpointContainer dumps the running container's processes with CRIU
// (through libcontainer, which knows the container's namespaces, mounts
// and cgroups) into images, and leaves them running, as the kubelet's
// checkpoint API expects. CRIU's dump.log is left in work. It returns the
// container as it was dumped.
//
// CRIU dumps the tree rooted at the container's init; that the keeper, not
// the daemon, is the init's parent does not matter for a dump.
func (r *Runtime) CheckpointContainer(ctx context.Context, id, images, work string) (Container, error) {
	c, err := r.lookupContainer(id)
	if err != nil {
		return Container{}, err
	}
	// Held through the dump: a concurrent stop or update must not change
	// the container under CRIU (it freezes the tree for a moment only).
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.State != ContainerRunning {
		return Container{}, fmt.Errorf("checkpoint container %s: it is %s, not running: %w", c.ID, c.State, ErrFailedPrecondition)
	}
	if r.ociOfContainer(c) != nil {
		return Container{}, fmt.Errorf("checkpoint container %s: it runs on an external OCI runtime handler, which peapod does not checkpoint: %w", c.ID, ErrUnimplemented)
	}
	lc, err := dumpableState(libcontainerRoot(r.opts.State), c.ID, c.PID, work)
	if err != nil {
		return Container{}, fmt.Errorf("checkpoint container %s: %w", c.ID, err)
	}
	err = dumpWithDeadline(ctx, lc, filepath.Join(work, "libcontainer"), &libcontainer.CriuOpts{
		ImagesDirectory: images,
		WorkDirectory:   work,
		LeaveRunning:    true,
		TcpEstablished:  true, // as CRI-O and containerd dump for the kubelet
		FileLocks:       true,
	})
	if err != nil {
		return Container{}, fmt.Errorf("checkpoint container %s with criu (log: %s): %w", c.ID, filepath.Join(work, "dump.log"), err)
	}
	return c.Container, nil
}

// dumpSlot makes a dump the only one of this process at a time, so that
// the criu a deadline kills is told apart as the daemon's one `criu swrk`
// child (libcontainer starts it and gives no handle on it).
var dumpSlot = make(chan struct{}, 1)

// criuGrace is how long a killed criu's dump may take to return.
const criuGrace = 10 * time.Second

// dumpWithDeadline runs the dump until ctx ends. A container can make
// CRIU wait for ever (a task it cannot seize, a stopped tracee), and the
// dump holds the container's lock: at ctx's end criu is killed, the
// container thawed if CRIU had frozen it, and the container stays running
// (CRIU leaves it running on a failed dump, its tasks detached when its
// ptrace ends with it). stateRoot is the libcontainer root lc was loaded
// from.
func dumpWithDeadline(ctx context.Context, lc *libcontainer.Container, stateRoot string, opts *libcontainer.CriuOpts) error {
	select {
	case dumpSlot <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for another container's dump: %w", ErrDeadlineExceeded, ctx.Err())
	}
	defer func() { <-dumpSlot }()
	done := make(chan error, 1)
	go func() { done <- lc.Checkpoint(opts) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	killed := killCRIUChildren()
	var err error
	thaw := lc
	select {
	case err = <-done:
	case <-time.After(criuGrace):
		err = errors.New("criu did not return after it was killed")
		// lc's lock is still the stuck Checkpoint's: thaw through a
		// fresh handle on the same state.
		if thaw, _ = libcontainer.Load(stateRoot, lc.ID()); thaw == nil {
			return fmt.Errorf("%w: the dump did not finish in time and criu did not stop (%d killed): %w", ErrDeadlineExceeded, killed, ctx.Err())
		}
	}
	if rerr := thaw.Resume(); rerr != nil && !errors.Is(rerr, libcontainer.ErrNotPaused) {
		err = errors.Join(err, fmt.Errorf("thaw the container after the cut dump: %w", rerr))
	}
	return fmt.Errorf("%w: the dump did not finish in time; criu was stopped (%d killed) and the container left running (%v): %w", ErrDeadlineExceeded, killed, err, ctx.Err())
}

// killCRIUChildren SIGKILLs this process's `criu swrk` children, each
// through a pidfd taken while it is still our unreaped child (its PID
// cannot be another's then), and returns how many.
func killCRIUChildren() int {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || proc.ParentPID(pid) != self {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		// Checked after the pidfd is taken: the descriptor names this
		// process whatever happens to the PID from now on.
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv := strings.Split(string(cmd), "\x00")
		if proc.ParentPID(pid) == self && len(argv) > 1 && filepath.Base(argv[0]) == "criu" && argv[1] == "swrk" {
			if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
				n++
			}
		}
		unix.Close(fd)
	}
	return n
}

// dumpableState loads the container's libcontainer state from a copy in
// work whose joined namespaces are named by the init's /proc/PID/ns links.
// The runner joined the pod's namespaces through its own descriptors
// (/proc/RUNNER/fd/N, runner.holderNamespaces), which died with it, and
// libcontainer stats those paths to tell CRIU which namespaces are
// external. The real state is left as it is.
func dumpableState(root, id string, pid int, work string) (*libcontainer.Container, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("no init PID recorded")
	}
	b, err := os.ReadFile(filepath.Join(root, id, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("read its libcontainer state: %w", err)
	}
	var state map[string]json.RawMessage
	if err := json.Unmarshal(b, &state); err != nil {
		return nil, fmt.Errorf("parse its libcontainer state: %w", err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(state["config"], &cfg); err != nil {
		return nil, fmt.Errorf("parse its libcontainer config: %w", err)
	}
	var nss configs.Namespaces
	if err := json.Unmarshal(cfg["namespaces"], &nss); err != nil {
		return nil, fmt.Errorf("parse its namespaces: %w", err)
	}
	for i, ns := range nss {
		if ns.Path != "" {
			nss[i].Path = "/proc/" + strconv.Itoa(pid) + "/ns/" + configs.NsName(ns.Type)
		}
	}
	if cfg["namespaces"], err = json.Marshal(nss); err != nil {
		return nil, err
	}
	if state["config"], err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	if b, err = json.Marshal(state); err != nil {
		return nil, err
	}
	copyRoot := filepath.Join(work, "libcontainer")
	if err := os.MkdirAll(filepath.Join(copyRoot, id), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(copyRoot, id, "state.json"), b, 0o600); err != nil {
		return nil, err
	}
	lc, err := libcontainer.Load(copyRoot, id)
	if err != nil {
		return nil, fmt.Errorf("load its libcontainer state: %w", err)
	}
	return lc, nil
}

// RestoreContainer creates a container in a ready pod from a checkpoint
// archive that passed checkpoint.Open: on img (the image it was dumped
// on), with cfg (the caller's config, whose process the caller took from
// the archive's spec). StartContainer then restores the dumped processes
// with CRIU instead of starting cfg's (sandbox/runner). Not deduplicated
// as CreateContainer's retries are: a retry creates a second container.
func (r *Runtime) RestoreContainer(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig, img Image, from *checkpoint.Archive) (Container, error) {
	if from == nil {
		return Container{}, fmt.Errorf("restore container: no checkpoint archive: %w", ErrInvalidArgument)
	}
	p, err := r.lookupPod(podID)
	if err != nil {
		return Container{}, fmt.Errorf("restore container: %w", err)
	}
	p.mu.Lock()
	h := p.RuntimeHandler
	p.mu.Unlock()
	if r.ociOf(h) != nil {
		return Container{}, fmt.Errorf("restore container: pod %s runs on the external OCI runtime handler %q, which peapod does not restore: %w", podID, h, ErrUnimplemented)
	}
	return r.createContainer(ctx, podID, cfg, img, from)
}

// restoreFiles applies the archive's rootfs diff and deletions onto the
// container's freshly mounted writable layer, then extracts its CRIU
// images into the bundle (private to root: they hold process memory).
func restoreFiles(from *checkpoint.Archive, c *Container) error {
	if err := from.ApplyRootfs(c.Rootfs); err != nil {
		return fmt.Errorf("apply its root filesystem changes: %w", err)
	}
	images := filepath.Join(c.Bundle, runner.RestoreImagesDir)
	if err := os.Mkdir(images, 0o700); err != nil {
		return fmt.Errorf("CRIU images directory: %w", err)
	}
	if err := from.ExtractImages(images); err != nil {
		return fmt.Errorf("extract its CRIU images: %w", err)
	}
	return nil
}

// checkRestorePrivileges refuses, with the reason, CRIU images that would
// restore more privilege than the container's spec gives: at create, and
// again right before the start (runContainer), against the spec the runner
// then reads.
func checkRestorePrivileges(c *Container) error {
	spec, err := runner.ReadSpec(c.Bundle)
	if err != nil {
		return err
	}
	lim, err := checkpoint.HostCeilings()
	if err != nil {
		return err
	}
	return checkpoint.CheckPrivileges(filepath.Join(c.Bundle, runner.RestoreImagesDir), spec, lim)
}
