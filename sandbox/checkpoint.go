package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
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
	err = lc.Checkpoint(&libcontainer.CriuOpts{
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

// checkRestorePrivileges refuses at create, with the reason, CRIU images
// that would restore more privilege than the container's spec gives; the
// runner checks again against the spec it starts with.
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
