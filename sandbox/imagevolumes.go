package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"
)

// Image volumes (Mount.image, KEP-4639): the kubelet pulls the image, and
// CreateContainer mounts its merged filesystem read-only at the mount's
// container path, or only its directory image_sub_path. The image store
// mounts the image (a storage container of its own per volume, mapped
// for a user-namespaced pod, which also keeps the image from being
// removed); hostfs binds it, or the sub-path resolved inside it, at
// <state>/image-volumes/<container>/<n>, the source of the spec's bind
// mount. Both survive a restart of the daemon; both go when the container
// is removed (removeRootfs). A container's image volumes are its own, as
// its root filesystem is: the kubelet creates a new container to restart
// one, and a pod's containers do not share them.

// resolveImageVolumes finds the images of cfg's image volumes in the
// store; the kubelet pulls them before it creates the container.
func (r *Runtime) resolveImageVolumes(cfg *runtimeapi.ContainerConfig) ([]ImageVolume, error) {
	var vols []ImageVolume
	for i, m := range cfg.GetMounts() {
		if m.GetImage() == nil {
			continue
		}
		ref := m.GetImage().GetImage()
		if ref == "" {
			return nil, fmt.Errorf("image volume at %s names no image: %w", m.GetContainerPath(), ErrInvalidArgument)
		}
		id, err := r.opts.Images.ImageID(ref)
		if err != nil {
			// Wraps image.ErrNotFound: NotFound.
			return nil, fmt.Errorf("image volume at %s: image %q is not present, pull it first: %w", m.GetContainerPath(), ref, err)
		}
		vols = append(vols, ImageVolume{Mount: i, ImageID: id})
	}
	return vols, nil
}

// mountImageVolumes mounts c's image volumes and returns the source of
// each one's bind mount by the index of its Mount. It is called again to
// start a container a restarted daemon has not mounted: what is still
// mounted is kept. The caller releases them on failure (releaseImageVolumes).
func (r *Runtime) mountImageVolumes(ctx context.Context, c *Container, pod *runtimeapi.PodSandboxConfig) (map[int]string, error) {
	if len(c.ImageVolumes) == 0 {
		return nil, nil
	}
	// First the mark that says, after a crash, that there is something to
	// release.
	if err := hostfs.MarkImageVolumes(r.opts.State, c.ID); err != nil {
		return nil, err
	}
	var uids, gids []specs.LinuxIDMapping
	if u := oci.PodUserns(pod); u != nil {
		uids, gids = oci.IDMappings(u.GetUids()), oci.IDMappings(u.GetGids())
	}
	mounts := c.Config.GetMounts()
	src := map[int]string{}
	for _, v := range c.ImageVolumes {
		if v.Mount < 0 || v.Mount >= len(mounts) {
			return nil, fmt.Errorf("image volume %d: the container config has %d mounts: %w", v.Mount, len(mounts), ErrInternal)
		}
		m := mounts[v.Mount]
		if hostfs.IsMountPoint(hostfs.ImageVolumePath(r.opts.State, c.ID, v.Mount)) {
			src[v.Mount] = hostfs.ImageVolumePath(r.opts.State, c.ID, v.Mount)
			continue
		}
		root, err := r.opts.Images.MountImageVolume(ctx, c.ID, v.Mount, v.ImageID, uids, gids)
		if err != nil {
			return nil, fmt.Errorf("image volume at %s (image %s): %w", m.GetContainerPath(), v.ImageID, err)
		}
		dst, err := hostfs.BindImageVolume(r.opts.State, c.ID, v.Mount, root, m.GetImageSubPath())
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("image volume at %s (image %s): %w: %w", m.GetContainerPath(), m.GetImage().GetImage(), err, ErrNotFound)
		case errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("image volume at %s (image %s): %w: %w", m.GetContainerPath(), m.GetImage().GetImage(), err, ErrInvalidArgument)
		case err != nil:
			return nil, fmt.Errorf("image volume at %s (image %s): %w", m.GetContainerPath(), m.GetImage().GetImage(), err)
		}
		src[v.Mount] = dst
	}
	return src, nil
}

// imageVolumeError marks a failed image volume as the kubelet counts it
// (its message starts with ImageVolumeMountFailed).
func imageVolumeError(err error) error {
	return fmt.Errorf("%w: %w", crierrors.ErrImageVolumeMountFailed, err)
}

// releaseImageVolumes unbinds and unmounts the image volumes of container
// id and deletes their storage containers: at removal, on a failed
// create, and for what a crash left. Nothing to release is not an error.
func (r *Runtime) releaseImageVolumes(ctx context.Context, id string) error {
	if !hostfs.HasImageVolumes(r.opts.State, id) {
		return nil
	}
	if err := hostfs.UnbindImageVolumes(r.opts.State, id); err != nil {
		return err
	}
	if err := r.opts.Images.RemoveImageVolumes(ctx, id); err != nil {
		return fmt.Errorf("remove the image volumes of container %s: %w", id, err)
	}
	return hostfs.RemoveImageVolumesDir(r.opts.State, id)
}

// ImageVolumeUsers returns the containers that mount image imageID as a
// volume: the image may not be removed while one exists.
func (r *Runtime) ImageVolumeUsers(imageID string) []string {
	var out []string
	for _, c := range r.Containers() {
		for _, v := range c.ImageVolumes {
			if v.ImageID == imageID {
				out = append(out, c.ID)
				break
			}
		}
	}
	return out
}
