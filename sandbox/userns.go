package sandbox

import (
	"context"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// User namespaces (hostUsers: false). The pod's keeper clones a holder
// process into a new user namespace with the kubelet's mappings, together
// with the pod's network, IPC, UTS and PID namespaces, so that the user
// namespace owns them all (sandbox/pause/pause.c); the keeper itself stays in
// the host user namespace. Containers join the holder's user namespace
// (named /proc/<holder>/ns/user in the spec; the runner joins it through
// the keeper's fd, sandbox/runner/holderns.go); their
// root filesystem is mounted by the image store with idmapped lower layers
// and an upper layer owned by the mapped root, and the kubelet's volumes
// become idmapped bind mounts.

// UserNamespaces reports whether pods may ask for a user namespace of their
// own (the runtime handler feature in Status).
func (r *Runtime) UserNamespaces() bool {
	if r == nil {
		return false
	}
	ok, why := hostfs.UserNamespacesSupported(r.opts.State)
	if !ok {
		r.usernsWarn.Do(func() { r.log.Warn("user namespaces are not supported here", "reason", why) })
	}
	return ok
}

// createRootfs has the image store create (or mount again) the container's
// root filesystem. For a pod with its own user namespace it is mapped, and
// it is bind-mounted at <state>/userns/<id>/rootfs (hostfs/rootfsbind.go).
func (r *Runtime) createRootfs(ctx context.Context, id, imageID string, pod *runtimeapi.PodSandboxConfig) (string, error) {
	u := oci.PodUserns(pod)
	if u == nil {
		return r.opts.Images.CreateRootfs(ctx, id, imageID)
	}
	src, err := r.opts.Images.CreateRootfsMapped(ctx, id, imageID, oci.IDMappings(u.GetUids()), oci.IDMappings(u.GetGids()))
	if err != nil {
		return "", err
	}
	_, gid := hostfs.HostRoot(u)
	return hostfs.BindMappedRootfs(r.opts.State, id, src, gid)
}

// sealRootfsBind makes the host's bind of a started user-namespaced
// container's root filesystem nosuid (hostfs.SealRootfsBind).
func (r *Runtime) sealRootfsBind(c *container, p *Pod) {
	if oci.PodUserns(p.Config) == nil {
		return
	}
	if err := hostfs.SealRootfsBind(r.opts.State, c.ID); err != nil {
		// The 0710 directory above still keeps other host users out.
		r.log.Warn("make the host's bind of a container's root filesystem nosuid", "container", c.ID, "err", err)
	}
}

// removeRootfs releases the container's image volumes, unbinds what
// createRootfs bound and has the image store remove the container's layer.
func (r *Runtime) removeRootfs(ctx context.Context, id string) error {
	if err := r.releaseImageVolumes(ctx, id); err != nil {
		return err
	}
	if err := hostfs.UnbindRootfs(r.opts.State, id); err != nil {
		return err
	}
	return r.opts.Images.RemoveRootfs(ctx, id)
}

// checkUsernsSupport refuses a pod user namespace where Status does not
// offer one.
func (r *Runtime) checkUsernsSupport(cfg *runtimeapi.PodSandboxConfig) error {
	if oci.PodUserns(cfg) == nil {
		return nil
	}
	if ok, why := hostfs.UserNamespacesSupported(r.opts.State); !ok {
		return fmt.Errorf("user namespaces are not supported here: %s: %w", why, ErrFailedPrecondition)
	}
	return nil
}
