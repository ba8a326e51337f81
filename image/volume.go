package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/storage"
	storagetypes "go.podman.io/storage/types"
)

// Image volumes (KEP-4639): an image's merged filesystem mounted into a
// container. Each one is a storage container of its own on the image, as
// the container's root filesystem is: storage then keeps the image from
// being deleted while it is mounted, maps its layers for a user-namespaced
// pod, and keeps its record across restarts. The storage container's
// metadata names the peapod container that owns it, so that what a crash
// or a reboot left is found by owner alone (RemoveImageVolumes,
// CollectGarbage).

// volumeMeta is the metadata of an image volume's storage container.
type volumeMeta struct {
	ImageVolumeOf string `json:"imageVolumeOf"` // the owning peapod container's ID
	Mount         int    `json:"mount"`         // the index of its Mount in the container config
}

// ImageVolumeStorageID is the storage container ID of mount n of container
// owner: derived, so that a retry or a restart finds the same one.
func ImageVolumeStorageID(owner string, n int) string {
	sum := sha256.Sum256([]byte(owner + "/image-volume/" + strconv.Itoa(n)))
	return hex.EncodeToString(sum[:])
}

// ImageID returns the ID ("sha256:<hex>") of the stored image ref names
// (anything Status accepts). Errors wrap ErrNotFound when it is absent.
func (s *Store) ImageID(ref string) (string, error) {
	simg, err := s.lookup(ref)
	if err != nil {
		return "", err
	}
	return "sha256:" + simg.ID, nil
}

// MountImageVolume mounts image imageID for mount n of container owner
// and returns the path of its merged filesystem. With mappings, the
// image's layers are mapped as a user-namespaced container's root
// filesystem is. Calling it again (a retry, a start after a restart)
// returns the same mount.
func (s *Store) MountImageVolume(ctx context.Context, owner string, n int, imageID string, uids, gids []specs.LinuxIDMapping) (string, error) {
	id := ImageVolumeStorageID(owner, n)
	if _, err := s.store.Container(id); err == nil {
		return s.store.Mount(id, "")
	}
	simg, err := s.lookup(imageID)
	if err != nil {
		return "", err
	}
	meta, err := json.Marshal(volumeMeta{ImageVolumeOf: owner, Mount: n})
	if err != nil {
		return "", err
	}
	opts := &storage.ContainerOptions{Volatile: !durableRootfs} // as the container's own (store.go)
	if len(uids) > 0 || len(gids) > 0 {
		opts.IDMappingOptions = storagetypes.IDMappingOptions{UIDMap: storageIDMap(uids), GIDMap: storageIDMap(gids)}
	}
	if _, err := s.store.CreateContainer(id, nil, simg.ID, "", string(meta), opts); err != nil {
		return "", fmt.Errorf("create image volume %d of container %s (image %s): %w", n, owner, simg.ID, err)
	}
	mp, err := s.store.Mount(id, "")
	if err != nil {
		_ = s.store.DeleteContainer(id)
		return "", fmt.Errorf("mount image volume %d of container %s: %w", n, owner, err)
	}
	return mp, nil
}

// RemoveImageVolumes unmounts and deletes every image volume of container
// owner. None is not an error.
func (s *Store) RemoveImageVolumes(ctx context.Context, owner string) error {
	cs, err := s.store.Containers()
	if err != nil {
		return fmt.Errorf("list storage containers: %w", err)
	}
	var errs []error
	for i := range cs {
		if volumeOwner(&cs[i]) != owner {
			continue
		}
		if err := s.RemoveRootfs(ctx, cs[i].ID); err != nil {
			errs = append(errs, fmt.Errorf("image volume of container %s: %w", owner, err))
		}
	}
	return errors.Join(errs...)
}

// volumeOwner is the peapod container an image volume's storage container
// belongs to, or "" for any other storage container.
func volumeOwner(c *storage.Container) string {
	if c.Metadata == "" {
		return ""
	}
	var m volumeMeta
	if json.Unmarshal([]byte(c.Metadata), &m) != nil {
		return ""
	}
	return m.ImageVolumeOf
}
