package sandbox

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/opencontainers/runc/libcontainer"
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
	lc := c.lc
	if lc == nil {
		if lc, err = libcontainer.Load(libcontainerRoot(r.opts.State), c.ID); err != nil {
			return Container{}, fmt.Errorf("checkpoint container %s: load its state: %w", c.ID, err)
		}
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
