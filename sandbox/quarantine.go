package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// A metadata record that cannot be used (cut short by a power loss, or
// garbage) must never keep the daemon from starting: every other pod would
// be unmanaged. It is moved aside into the bucket "quarantine-<bucket>"
// of the same file, under "<id>@<unix nanos>", for an operator to look at,
// and the daemon starts without it; reconcileHalfDone then removes what
// no record names (keeper, bundle, pod files), as after a crash.

func quarantineBucket(bucket []byte) []byte { return append([]byte("quarantine-"), bucket...) }

// quarantine moves the record id of bucket aside.
func (s *metadataStore) quarantine(bucket []byte, id string, data []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		q, err := tx.CreateBucketIfNotExists(quarantineBucket(bucket))
		if err != nil {
			return fmt.Errorf("create quarantine bucket: %w", err)
		}
		key := fmt.Sprintf("%s@%d", id, time.Now().UnixNano())
		if err := q.Put([]byte(key), append([]byte(nil), data...)); err != nil {
			return fmt.Errorf("keep record %s aside: %w", id, err)
		}
		if err := tx.Bucket(bucket).Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete record %s: %w", id, err)
		}
		return nil
	})
}

// badRecord is a record recover could not use, and why.
type badRecord struct {
	bucket []byte
	id     string
	data   []byte
	err    error
}

// quarantineAll moves the bad records aside, logging each.
func (r *Runtime) quarantineAll(bad []badRecord) {
	for _, b := range bad {
		if err := r.store.quarantine(b.bucket, b.id, b.data); err != nil {
			r.log.Error("metadata record cannot be used, and moving it aside failed; it is ignored", "bucket", string(b.bucket), "id", b.id, "reason", b.err, "err", err)
			continue
		}
		r.log.Warn("metadata record cannot be used; moved aside", "bucket", string(b.bucket), "id", b.id,
			"reason", b.err, "moved_to", string(quarantineBucket(b.bucket)))
	}
}

// validRecordID checks that a record's own ID is the key it is stored
// under and looks like an ID peapod made (64 hex digits), so that a record
// that decodes by chance ("{}") is not taken for a pod.
func validRecordID(key, id string) error {
	if id != key {
		return fmt.Errorf("record of %q says it is %q", key, id)
	}
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("bad ID %q", id)
	}
	return nil
}

// openMetadataStoreOrAside opens the metadata file; a file bbolt cannot
// open (garbage, cut short) is renamed to "<path>.unreadable-<unix>" with
// an error logged, and an empty one is started, so that the daemon runs
// and cleans up what no record names. Only a lock (another peapod on the
// same root) stays fatal.
func openMetadataStoreOrAside(path string, log interface {
	Error(msg string, args ...any)
}) (*metadataStore, error) {
	s, err := openMetadataStore(path)
	if err == nil || errors.Is(err, bolterrors.ErrTimeout) || errors.Is(err, errMetadataLocked) {
		return s, err
	}
	if _, serr := os.Stat(path); serr != nil {
		return nil, err // nothing there to move aside: a real error
	}
	aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
	}
	log.Error("metadata file cannot be opened; moved aside, starting with no pods (what they left is cleaned up)", "err", err, "moved_to", aside)
	return openMetadataStore(path)
}

// checkSpecs looks at the OCI spec of every container that is created or
// running: one that cannot be decoded (a power cut in the middle of an
// older, non-atomic write; a bad disk) is renamed to
// "config.json.unreadable-<unix>" and logged, so that the operator learns
// it at start rather than at the next exec, which then fails with "no
// such file" instead of a decode error.
func (r *Runtime) checkSpecs() {
	for id, c := range r.containers {
		if c.State != ContainerCreated && c.State != ContainerRunning {
			continue
		}
		_, err := readSpec(c.Bundle)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			continue
		}
		path := filepath.Join(c.Bundle, "config.json")
		aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
		if rerr := os.Rename(path, aside); rerr != nil {
			r.log.Error("OCI spec cannot be used, and moving it aside failed", "container", id, "reason", err, "err", rerr)
			continue
		}
		r.log.Warn("OCI spec cannot be used; moved aside (execs into the container fail)", "container", id, "reason", err, "moved_to", aside)
	}
}
