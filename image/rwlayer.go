package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"go.podman.io/storage"
	drivers "go.podman.io/storage/drivers"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/durable"
)

// Writable layers of containers, made with the storage driver directly.
//
// containers/storage keeps all its containers in one record file and all
// its layers in another, and rewrites each whole on every create, mount
// and removal: on a node with N containers, exited ones included, every
// CreateContainer and RemoveContainer marshalled O(N) records (125 ms p50
// per create at 5,000 exited containers, most of it JSON; the making of
// the node-scale bench grew with the square of its containers). A
// container's writable layer needs none of that bookkeeping: peapod's own
// container record already names the container and its image. So the
// overlay driver makes the layer itself, under the container's ID, and one
// small file of ours (rwRecordDir/<id>) names its parent, the image's top
// layer: O(1) per container. The driver's per-layer code (directories,
// lower links, volatile, the mount) stays containers/storage's.
//
// What containers/storage did for these layers and now is done here:
//   - an image cannot be deleted under a container's layer (Remove,
//     removeOrphanLayers and CollectGarbage see the parents in use);
//   - a layer no container record names is collected after an unclean stop
//     (CollectGarbage), and the driver's own collection, which would remove
//     every layer it has no record of, is replaced by one that knows these
//     (collectStorageDirs).
//
// Containers in a user namespace (mapped layers) and image volumes stay
// containers/storage containers: they need its ID mapping and are few.

// rwRecordDir holds one record per writable layer, beneath the graph root.
const rwRecordDir = "peapod-rwlayers"

// rwRecord is what peapod keeps of a container's writable layer.
type rwRecord struct {
	Parent string `json:"parent"` // the image's top layer; "" for an image without layers
	Image  string `json:"image"`  // the storage image ID
}

// rwLayers is the set of writable layers made by the driver directly.
type rwLayers struct {
	dir string

	mu   sync.Mutex
	byID map[string]rwRecord

	// use is held shared from a create's choice of parent to its record,
	// and exclusively by whatever deletes image layers, which must see
	// every parent in use.
	use sync.RWMutex
}

// rwLayerID reports whether id can name a driver-made writable layer:
// peapod's container IDs (64 hex digits), never a path.
func rwLayerID(id string) bool { return storageID(id) }

// loadRWLayers reads the writable layers' records. One that cannot be
// read is logged with what it holds, moved aside (<id>.corrupt-<time>)
// and reported as containers/storage's are (repairRecords): the start then
// repairs the store, where RootfsRecorded reports that layer lost and
// CollectGarbage removes it, and the moved file with it. One bad file
// never stops the node.
func loadRWLayers(graphRoot string, log *slog.Logger) (*rwLayers, []MovedAside, error) {
	dir := filepath.Join(graphRoot, rwRecordDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("image: create %s: %w", dir, err)
	}
	rw := &rwLayers{dir: dir, byID: map[string]rwRecord{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("image: read %s: %w", dir, err)
	}
	var moved []MovedAside
	stamp := time.Now().UTC().Format("20060102T150405.000000000Z")
	for _, e := range ents {
		id := e.Name()
		if !rwLayerID(id) {
			continue // moved aside before, or a temporary of a cut write (collectStorageDirs)
		}
		var rec rwRecord
		p := filepath.Join(dir, id)
		data, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(data, &rec)
		}
		if err == nil && (rec.Parent != "" && !storageID(rec.Parent) || !storageID(rec.Image)) {
			err = fmt.Errorf("parent %q or image %q is not a storage ID", rec.Parent, rec.Image)
		}
		if err == nil {
			rw.byID[id] = rec
			continue
		}
		to := p + ".corrupt-" + stamp
		if rerr := os.Rename(p, to); rerr != nil {
			return nil, moved, fmt.Errorf("image: move the unreadable record of container %s's writable layer aside (%v): %w", id, err, rerr)
		}
		log.Warn("unreadable record of a container's writable layer; moved aside, the layer will be collected", "container", id, "file", p, "moved_to", to, "err", err, "content", fmt.Sprintf("%.200q", data))
		moved = append(moved, MovedAside{File: p, To: to, Reason: err})
	}
	if len(moved) > 0 {
		if err := durable.SyncDir(dir); err != nil {
			return nil, moved, fmt.Errorf("image: moving records aside in %s: %w", dir, err)
		}
	}
	return rw, moved, nil
}

func (rw *rwLayers) get(id string) (rwRecord, bool) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	rec, ok := rw.byID[id]
	return rec, ok
}

func (rw *rwLayers) snapshot() map[string]rwRecord {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	out := make(map[string]rwRecord, len(rw.byID))
	for id, rec := range rw.byID {
		out[id] = rec
	}
	return out
}

// imageInUse reports whether a writable layer stands on image imageID.
// The caller holds use exclusively.
func (rw *rwLayers) imageInUse(imageID string) bool {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	for _, rec := range rw.byID {
		if rec.Image == imageID {
			return true
		}
	}
	return false
}

// save records id's layer: written whole (temp+rename), synced with its
// directory when containers' records are durable (durableRootfs), as
// containers/storage syncs its own then.
func (rw *rwLayers) save(id string, rec rwRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	path := filepath.Join(rw.dir, id)
	if durableRootfs {
		err = durable.WriteFile(path, data, 0o600)
	} else {
		tmp := path + ".tmp"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		return fmt.Errorf("record writable layer of container %s: %w", id, err)
	}
	rw.mu.Lock()
	rw.byID[id] = rec
	rw.mu.Unlock()
	return nil
}

// forget removes id's record; an absent one is fine.
func (rw *rwLayers) forget(id string) error {
	rw.mu.Lock()
	delete(rw.byID, id)
	rw.mu.Unlock()
	if err := os.Remove(filepath.Join(rw.dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record of container %s's writable layer: %w", id, err)
	}
	return nil
}

func (s *Store) driver() (drivers.Driver, error) {
	d, err := s.store.GraphDriver()
	if err != nil {
		return nil, fmt.Errorf("image: storage driver: %w", err)
	}
	return d, nil
}

// rwMergedDir is where the driver mounts layer id.
func (s *Store) rwMergedDir(id string) string {
	return filepath.Join(s.containerRoot, "overlay", id, "merged")
}

// rwDiffDir is layer id's upper directory: what the container wrote.
func (s *Store) rwDiffDir(id string) string {
	return filepath.Join(s.containerRoot, "overlay", id, "diff")
}

// createRW makes and mounts container id's writable layer on simg. The
// record comes first: a crash after it leaves a record whose layer
// CollectGarbage removes unless a container record names it, and a crash
// before it leaves at most a driver directory no record names, which
// collectStorageDirs removes.
func (s *Store) createRW(id string, simg *storage.Image) (string, error) {
	s.rw.use.RLock()
	defer s.rw.use.RUnlock()
	d, err := s.driver()
	if err != nil {
		return "", err
	}
	// Looked up before the lock: a removal may have taken it since, and
	// a record naming a removed image would not keep its layers from the
	// next image that shares them.
	if _, err := s.store.Image(simg.ID); err != nil {
		return "", fmt.Errorf("create rootfs of container %s: image %s was removed: %w", id, simg.ID, ErrNotFound)
	}
	if simg.TopLayer != "" && !d.Exists(simg.TopLayer) {
		return "", fmt.Errorf("create rootfs of container %s: image %s lost its layers; pull it again: %w", id, simg.ID, ErrNotFound)
	}
	if err := s.rw.save(id, rwRecord{Parent: simg.TopLayer, Image: simg.ID}); err != nil {
		return "", err
	}
	if err := d.CreateReadWrite(id, simg.TopLayer, &drivers.CreateOpts{}); err != nil {
		err = fmt.Errorf("create rootfs of container %s (image %s): %w", id, simg.ID, err)
		return "", errors.Join(err, s.removeRWLocked(d, id))
	}
	mp, err := s.mountRW(d, id)
	if err != nil {
		return "", errors.Join(err, s.removeRWLocked(d, id))
	}
	return mp, nil
}

// mountRW mounts layer id, or returns its mount if it is mounted already
// (by this daemon, or by one before it that did not unmount it): the
// driver would count a second mount of it, and one unmount would then not
// unmount it.
func (s *Store) mountRW(d drivers.Driver, id string) (string, error) {
	mp := s.rwMergedDir(id)
	if mounted, err := mountinfo.Mounted(mp); err == nil && mounted {
		return mp, nil
	}
	got, err := d.Get(id, drivers.MountOpts{Volatile: !durableRootfs})
	if err != nil {
		return "", fmt.Errorf("mount rootfs of container %s: %w", id, err)
	}
	return got, nil
}

// unmountRW unmounts layer id; not mounted is fine.
func (s *Store) unmountRW(d drivers.Driver, id string) error {
	mp := s.rwMergedDir(id)
	mounted, err := mountinfo.Mounted(mp)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // no layer directory: nothing mounted
		}
		return fmt.Errorf("unmount rootfs of container %s: %w", id, err)
	}
	if !mounted {
		return nil
	}
	if err := d.Put(id); err != nil {
		return fmt.Errorf("unmount rootfs of container %s: %w", id, err)
	}
	// The driver counts mounts; a count this daemon did not make (a
	// mount a crashed daemon left) must not keep it mounted.
	if mounted, _ := mountinfo.Mounted(mp); mounted {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount rootfs of container %s: %w", id, err)
		}
	}
	return nil
}

// removeRW unmounts and deletes layer id and its record.
func (s *Store) removeRW(id string) error {
	s.rw.use.RLock()
	defer s.rw.use.RUnlock()
	d, err := s.driver()
	if err != nil {
		return err
	}
	return s.removeRWLocked(d, id)
}

// removeRWLocked is removeRW for a caller holding rw.use (either way).
func (s *Store) removeRWLocked(d drivers.Driver, id string) error {
	if err := s.unmountRW(d, id); err != nil {
		return err
	}
	if err := d.Remove(id); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete rootfs of container %s: %w", id, err)
	}
	return s.rw.forget(id)
}

// unmountAllRW unmounts every driver-made writable layer (Close).
func (s *Store) unmountAllRW() error {
	d, err := s.driver()
	if err != nil {
		return err
	}
	var errs []error
	for id := range s.rw.snapshot() {
		errs = append(errs, s.unmountRW(d, id))
	}
	return errors.Join(errs...)
}

// collectStorageDirs removes what containers/storage's own collection
// removes: driver layers, layer data and container and image directories
// no record names. That collection cannot be used here, since it would
// remove every writable layer made by the driver directly; keepLayer
// names those to keep. It runs before the daemon serves.
func (s *Store) collectStorageDirs(keepLayer map[string]bool) (removed []string, err error) {
	d, err := s.driver()
	if err != nil {
		return nil, err
	}
	layers, err := s.store.Layers()
	if err != nil {
		return nil, fmt.Errorf("image: list layers: %w", err)
	}
	recorded := map[string]bool{}
	for _, l := range layers {
		recorded[l.ID] = true
	}
	var errs []error
	ids, err := d.ListLayers()
	if err != nil {
		return nil, fmt.Errorf("image: list driver layers: %w", err)
	}
	for _, id := range ids {
		if recorded[id] || keepLayer[id] {
			continue
		}
		if err := d.Remove(id); err != nil {
			errs = append(errs, fmt.Errorf("remove driver layer %s no record names: %w", id, err))
			continue
		}
		removed = append(removed, id)
	}
	// Layer data (tar-split files, data directories) of unrecorded layers.
	errs = append(errs, sweep(filepath.Join(s.containerRoot, "overlay-layers"), func(name string, _ bool) bool {
		id, _ := strings.CutSuffix(name, ".tar-split.gz")
		return storageID(id) && !recorded[id]
	}))
	// Directories of storage containers and images no record names.
	containers, err := s.store.Containers()
	if err != nil {
		return removed, errors.Join(append(errs, fmt.Errorf("image: list storage containers: %w", err))...)
	}
	known := map[string]bool{}
	for _, c := range containers {
		known[c.ID] = true
	}
	images, err := s.store.Images()
	if err != nil {
		return removed, errors.Join(append(errs, fmt.Errorf("image: list images: %w", err))...)
	}
	for _, img := range images {
		known[img.ID] = true
	}
	unknownDir := func(name string, dir bool) bool { return dir && storageID(name) && !known[name] }
	errs = append(errs, sweep(filepath.Join(s.containerRoot, "overlay-containers"), unknownDir))
	errs = append(errs, sweep(filepath.Join(s.root, "overlay-images"), unknownDir))
	// Temporaries of records whose write was cut, and records moved aside
	// unreadable (the log said what they held; the layers they named
	// were handled above). A power cut can empty a record made in its
	// last seconds (a new file: ext4's auto_da_alloc does not cover it),
	// so these would pile up.
	errs = append(errs, sweep(s.rw.dir, func(name string, _ bool) bool { return !rwLayerID(name) }))
	return removed, errors.Join(errs...)
}

// storageID reports whether name is a containers/storage ID.
func storageID(name string) bool { return len(name) == 64 && hexID(name) }

// sweep removes the entries of dir that remove selects; no dir is fine.
func sweep(dir string, remove func(name string, isDir bool) bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		if remove(e.Name(), e.IsDir()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rwRecorded reports whether layer id and every layer beneath it are still
// there: its driver directory, its parent's chain in containers/storage's
// records (an image without layers has none).
func rwRecorded(d drivers.Driver, parents map[string]string, id string, rec rwRecord) bool {
	return d.Exists(id) && (rec.Parent == "" || chainRecorded(parents, rec.Parent))
}

// removeUnrecordedRW removes the driver's layer named after container id
// when no record names it (its record was moved aside unreadable, and no
// repair has run since): a removed container leaves no layer behind.
func (s *Store) removeUnrecordedRW(id string) error {
	if !rwLayerID(id) {
		return nil
	}
	s.rw.use.RLock()
	defer s.rw.use.RUnlock()
	d, err := s.driver()
	if err != nil {
		return err
	}
	if !d.Exists(id) {
		return nil
	}
	if _, err := s.store.Layer(id); err == nil {
		return nil // a containers/storage layer: not a container's
	}
	return s.removeRWLocked(d, id)
}
