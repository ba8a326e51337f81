package store

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// A metadata record that cannot be used (cut short by a power loss, or
// garbage) must never keep the daemon from starting: every other pod would
// be unmanaged. It is moved aside into the bucket "quarantine-<bucket>"
// of the same file, under "<id>@<unix nanos>", for an operator to look at.

// QuarantineBucket is where records of bucket are moved aside.
func QuarantineBucket(bucket []byte) []byte { return append([]byte("quarantine-"), bucket...) }

// Quarantine moves the record id of bucket aside.
func (s *Metadata) Quarantine(bucket []byte, id string, data []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		q, err := tx.CreateBucketIfNotExists(QuarantineBucket(bucket))
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

// OpenOrAside opens the metadata file; a file bbolt cannot open (garbage,
// cut short) is renamed to "<path>.unreadable-<unix>" with an error logged,
// and an empty one is started, so that the daemon runs and cleans up what
// no record names. Only a lock (another peapod on the same root) stays
// fatal.
func OpenOrAside(path string, log interface {
	Error(msg string, args ...any)
}) (*Metadata, error) {
	s, err := Open(path)
	if err == nil || errors.Is(err, bolterrors.ErrTimeout) || errors.Is(err, ErrLocked) {
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
	return Open(path)
}
