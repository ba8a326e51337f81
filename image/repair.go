package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.podman.io/storage"
	storagetypes "go.podman.io/storage/types"

	"github.com/peapod-cri/peapod/durable"
)

// storageRecord is one file containers/storage keeps its records in, for
// peapod's store (overlay driver, not transient; go.podman.io/storage
// layers.go, images.go, containers.go). c/storage decodes each whole when
// it loads that part of the store and refuses the store when one does not
// decode: a layers.json truncated by a bad disk made every image call and
// every container removal fail until someone deleted it by hand.
//
// Its lock files (layers.lock, images.lock, containers.lock,
// mountpoints.lock, storage.lock) are not records: they hold an opaque
// last-writer token, and any content, empty included, is accepted.
type storageRecord struct {
	inRunRoot bool   // below the run root (state), else the graph root
	path      string // relative to that
	decode    func([]byte) error
}

// decodeAs decodes data as c/storage does for its record type T (its
// json-iterator is configured compatible with encoding/json), and requires
// every record to have an ID, as c/storage indexes them by it.
func decodeAs[T any](id func(*T) string) func([]byte) error {
	return func(data []byte) error {
		var recs []*T
		if err := json.Unmarshal(data, &recs); err != nil {
			return err
		}
		for i, r := range recs {
			if r == nil || id(r) == "" {
				return fmt.Errorf("record %d has no ID", i)
			}
		}
		return nil
	}
}

// mountRecord is c/storage's layerMountPoint (unexported): mountpoints.json.
type mountRecord struct {
	ID         string `json:"id"`
	MountPoint string `json:"path"`
	MountCount int    `json:"count"`
}

var storageRecords = []storageRecord{
	{false, "overlay-layers/layers.json", decodeAs(func(l *storage.Layer) string { return l.ID })},
	{false, "overlay-layers/volatile-layers.json", decodeAs(func(l *storage.Layer) string { return l.ID })},
	{false, "overlay-images/images.json", decodeAs(func(i *storage.Image) string { return i.ID })},
	{false, "overlay-containers/containers.json", decodeAs(func(c *storage.Container) string { return c.ID })},
	{false, "overlay-containers/volatile-containers.json", decodeAs(func(c *storage.Container) string { return c.ID })},
	{true, "overlay-layers/mountpoints.json", decodeAs(func(m *mountRecord) string { return m.ID })},
}

// MovedAside is a containers/storage record file that could not be used.
type MovedAside struct {
	File, To string
	Reason   error
}

// repairRecords checks containers/storage's record files before the store
// opens them. One that cannot be read or decoded, or is empty (c/storage
// writes "[]" when it has no record, so an empty file is a write a power
// cut or a bad disk lost), is renamed <file>.corrupt-<time> (kept for a
// post-mortem) and the directory synced: c/storage then starts that part
// with no record. What the lost records named is reconciled once the
// runtime has loaded its own records (RootfsRecorded and CollectGarbage,
// from cmd/peapod's collectStorage): images whose layers are no longer
// all recorded are forgotten (pulled again), containers whose root
// filesystem is no longer recorded are stopped, layers and layer
// directories nothing names are removed.
func repairRecords(graphRoot, runRoot string, log *slog.Logger) ([]MovedAside, error) {
	var moved []MovedAside
	stamp := time.Now().UTC().Format("20060102T150405.000000000Z")
	for _, rec := range storageRecords {
		p := filepath.Join(graphRoot, rec.path)
		if rec.inRunRoot {
			p = filepath.Join(runRoot, rec.path)
		}
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			err = fmt.Errorf("read: %w", err)
		case len(data) == 0:
			err = errors.New("empty (c/storage writes [] when it has no record)")
		default:
			if err = rec.decode(data); err == nil {
				continue
			}
			err = fmt.Errorf("decode: %w", err)
		}
		to := p + ".corrupt-" + stamp
		if rerr := os.Rename(p, to); rerr != nil {
			return moved, fmt.Errorf("image: move the unusable containers/storage record %s aside (%v): %w", p, err, rerr)
		}
		if serr := durable.SyncDir(filepath.Dir(p)); serr != nil {
			return moved, fmt.Errorf("image: moving %s aside: %w", p, serr)
		}
		log.Warn("containers/storage record cannot be read; moved aside", "file", p, "moved_to", to, "err", err)
		moved = append(moved, MovedAside{File: p, To: to, Reason: err})
	}
	return moved, nil
}

// RecordsMovedAside lists the containers/storage record files Open moved
// aside because they could not be used: the store must then be reconciled
// as after an unclean stop (CollectGarbage).
func (s *Store) RecordsMovedAside() []MovedAside { return s.movedAside }

// RootfsRecorded reports, for each container ID, whether its storage
// container and every layer beneath it (its own, its image's) are still
// recorded. One that is not lost its records (a record file moved aside):
// its root filesystem cannot be mounted again, and the layer directories
// it runs on are not protected from CollectGarbage.
func (s *Store) RootfsRecorded(containerIDs []string) (map[string]bool, error) {
	parents, err := s.layerParents()
	if err != nil {
		return nil, err
	}
	// Once for all: each call takes containers/storage's graph lock, and
	// a driver that cannot be had is not a lost record either.
	d, err := s.driver()
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(containerIDs))
	for _, id := range containerIDs {
		if rec, ok := s.rw.get(id); ok {
			out[id] = rwRecorded(d, parents, id, rec)
			continue
		}
		c, err := s.store.Container(id)
		switch {
		case errors.Is(err, storagetypes.ErrContainerUnknown):
			out[id] = false
		case err != nil:
			// Not a lost record: nothing may be stopped for it.
			return nil, fmt.Errorf("image: storage container %s: %w", id, err)
		default:
			out[id] = chainRecorded(parents, c.LayerID)
		}
	}
	return out, nil
}

// layerParents maps every recorded layer to its parent ("" at the base).
func (s *Store) layerParents() (map[string]string, error) {
	layers, err := s.store.Layers()
	if err != nil {
		return nil, fmt.Errorf("image: list layers: %w", err)
	}
	parents := make(map[string]string, len(layers))
	for _, l := range layers {
		parents[l.ID] = l.Parent
	}
	return parents, nil
}

// chainRecorded reports whether layer and all its parents are recorded.
func chainRecorded(parents map[string]string, layer string) bool {
	if layer == "" {
		return false
	}
	for id, steps := layer, 0; id != ""; steps++ {
		p, ok := parents[id]
		if !ok || steps > len(parents) { // unrecorded, or a cycle
			return false
		}
		id = p
	}
	return true
}
