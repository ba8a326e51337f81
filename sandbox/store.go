package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// metadataStore persists pods and containers in a bbolt file so that a
// restarted daemon reports the same pods and containers. The in-memory maps
// in Runtime are the working copy; every state change is written through.
type metadataStore struct {
	db *bolt.DB
}

var (
	bucketPods       = []byte("pods")
	bucketContainers = []byte("containers")
)

func openMetadataStore(path string) (*metadataStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("metadata %s is locked: is another peapod running with the same --root?", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketPods, bucketContainers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init metadata %s: %w", path, err)
	}
	return &metadataStore{db: db}, nil
}

func (s *metadataStore) close() error { return s.db.Close() }

func (s *metadataStore) put(bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", id, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(id), data)
	})
}

func (s *metadataStore) delete(bucket []byte, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Delete([]byte(id))
	})
}

// each decodes every record of bucket with decode; a record that cannot be
// decoded is reported, not skipped silently.
func (s *metadataStore) each(bucket []byte, decode func(id string, data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			return decode(string(k), v)
		})
	})
}
