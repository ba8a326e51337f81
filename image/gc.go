package image

import (
	"errors"
	"fmt"

	storagetypes "go.podman.io/storage/types"
)

// Collected is what CollectGarbage removed.
type Collected struct {
	Images     []string // images whose layers are not all recorded (records only: pulled again)
	Containers []string // writable layers and storage containers (each with its layer) no record named, or whose layers are not all recorded
	Layers     []string // layers no image and no container uses
	// DriverDirs are driver layer directories no record named: a layer a
	// create or pull cut left before its record, or a container's layer
	// whose record a power cut emptied (moved aside at Open).
	DriverDirs []string
}

// CollectGarbage repairs the store after an unclean stop (a crash or a
// power cut), when containers/storage may hold what no peapod record points
// to: the writable layer of a container whose CreateContainer was cut
// before its record was saved, layers of a pull cut before its image was
// recorded, and driver directories whose records a power cut lost
// (containers are volatile, their records unsynced: CreateRootfsMapped).
//
// keep says which storage containers belong to a container peapod has a
// record of (the storage container's ID is peapod's container ID); those,
// whether running or not, and every layer an image or a kept container uses
// stay. Images are never removed, unless a lost record file (moved aside
// by Open) took the record of one of their layers: such an image, and a
// storage container whose layers are not all recorded, cannot be mounted
// any more; their records go, and so do their layers that remain (the
// caller stops a running container whose root filesystem is so lost
// first: RootfsRecorded). It must run before the daemon serves: a pull or
// create in flight would have layers not yet recorded.
func (s *Store) CollectGarbage(keep func(containerID string) bool) (Collected, error) {
	s.rw.use.Lock()
	defer s.rw.use.Unlock()
	var out Collected
	var errs []error
	parents, err := s.layerParents()
	if err != nil {
		return out, err
	}
	if out.Images, err = s.dropIncompleteImages(parents); err != nil {
		errs = append(errs, err)
	}
	containers, err := s.store.Containers()
	if err != nil {
		return out, errors.Join(append(errs, fmt.Errorf("image: list storage containers: %w", err))...)
	}
	usedLayers := map[string]bool{}
	// Writable layers the driver made (rwlayer.go): kept with their
	// container, their parents used.
	keptRW := map[string]bool{}
	if d, err := s.driver(); err != nil {
		errs = append(errs, err)
	} else {
		for id, rec := range s.rw.snapshot() {
			if keep(id) && rwRecorded(d, parents, id, rec) {
				keptRW[id] = true
				if rec.Parent != "" {
					usedLayers[rec.Parent] = true
				}
				continue
			}
			if err := s.removeRWLocked(d, id); err != nil {
				errs = append(errs, err)
				keptRW[id] = true // its directory stays until it can go
				continue
			}
			out.Containers = append(out.Containers, id)
		}
	}
	for _, c := range containers {
		// An image volume is kept with the container that mounts it (volume.go).
		owner := volumeOwner(&c)
		if (keep(c.ID) || (owner != "" && keep(owner))) && chainRecorded(parents, c.LayerID) {
			usedLayers[c.LayerID] = true
			continue
		}
		if _, err := s.store.Unmount(c.ID, true); err != nil && !errors.Is(err, storagetypes.ErrLayerNotMounted) &&
			!errors.Is(err, storagetypes.ErrContainerUnknown) && !errors.Is(err, storagetypes.ErrLayerUnknown) {
			errs = append(errs, fmt.Errorf("unmount storage container %s: %w", c.ID, err))
			continue
		}
		if err := s.store.DeleteContainer(c.ID); err != nil && !errors.Is(err, storagetypes.ErrContainerUnknown) {
			errs = append(errs, fmt.Errorf("delete storage container %s: %w", c.ID, err))
			continue
		}
		out.Containers = append(out.Containers, c.ID)
	}

	images, err := s.store.Images()
	if err != nil {
		return out, errors.Join(append(errs, fmt.Errorf("image: list images: %w", err))...)
	}
	for _, img := range images {
		usedLayers[img.TopLayer] = true
		for _, l := range img.MappedTopLayers {
			usedLayers[l] = true
		}
	}
	layers, err := s.store.Layers()
	if err != nil {
		return out, errors.Join(append(errs, fmt.Errorf("image: list layers: %w", err))...)
	}
	parent := map[string]string{}
	for _, l := range layers {
		parent[l.ID] = l.Parent
	}
	// A used layer's parents are used.
	for id := range usedLayers {
		for p := parent[id]; p != "" && !usedLayers[p]; p = parent[p] {
			usedLayers[p] = true
		}
	}
	// The unused ones, children before parents (a layer with children
	// cannot be deleted).
	unused := map[string]bool{}
	for _, l := range layers {
		if !usedLayers[l.ID] {
			unused[l.ID] = true
		}
	}
	for len(unused) > 0 {
		hasChild := map[string]bool{}
		for id := range unused {
			hasChild[parent[id]] = true
		}
		progress := false
		for id := range unused {
			if hasChild[id] {
				continue
			}
			delete(unused, id)
			if err := s.store.DeleteLayer(id); err != nil && !errors.Is(err, storagetypes.ErrLayerUnknown) {
				errs = append(errs, fmt.Errorf("delete unused layer %s: %w", id, err))
				continue
			}
			out.Layers = append(out.Layers, id)
			progress = true
		}
		if !progress {
			break
		}
	}
	// Driver directories and layer data no record names, as c/storage's
	// own collection, which would take the kept writable layers too.
	dirs, err := s.collectStorageDirs(keptRW)
	out.DriverDirs = dirs
	if err != nil {
		errs = append(errs, fmt.Errorf("storage garbage collection: %w", err))
	}
	return out, errors.Join(errs...)
}

// dropIncompleteImages forgets the images whose layers are not all
// recorded (their record only: c/storage's DeleteImage would fail on the
// unknown layer after deleting the record). A pull makes them again; the
// layers of theirs that remain are unused from now on.
func (s *Store) dropIncompleteImages(parents map[string]string) ([]string, error) {
	images, err := s.store.Images()
	if err != nil {
		return nil, fmt.Errorf("image: list images: %w", err)
	}
	var dropped []string
	var errs []error
	for _, img := range images {
		complete := img.TopLayer == "" || chainRecorded(parents, img.TopLayer)
		for _, l := range img.MappedTopLayers {
			complete = complete && chainRecorded(parents, l)
		}
		if complete {
			continue
		}
		if err := s.store.Delete(img.ID); err != nil && !errors.Is(err, storagetypes.ErrImageUnknown) {
			errs = append(errs, fmt.Errorf("forget image %s, whose layers are not all recorded: %w", img.ID, err))
			continue
		}
		s.mu.Lock()
		delete(s.cache, img.ID)
		s.mu.Unlock()
		dropped = append(dropped, img.ID)
	}
	return dropped, errors.Join(errs...)
}
