package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Metadata persists pods and containers in a bbolt file so that a
// restarted daemon reports the same pods and containers. The in-memory maps
// in Runtime are the working copy; every state change is written through.
//
// Writes go through one committer goroutine (group commit): a write that
// arrives while a commit is in flight joins the next transaction with every
// other write that arrived meanwhile. Each caller still returns only once
// its write is committed and synced, so nothing is less durable, but
// concurrent RPCs share one fsync pair instead of queueing for one each
// (bbolt syncs twice per commit: the pages, then the meta page). An idle
// store commits a lone write at once: no delay is added to wait for company.
type Metadata struct {
	db     *bolt.DB
	writes chan *storeWrite
	done   chan struct{} // closed when the committer has returned

	mu     sync.RWMutex // held to read while sending a write, to write while closing
	closed bool
}

// storeWrite is one Put (data != nil) or Delete of id in bucket.
type storeWrite struct {
	bucket []byte
	id     string
	data   []byte
	result chan error // buffered: the committer never waits for the caller
}

// maxGroup bounds a group commit, so that one transaction stays small.
const maxGroup = 128

// The buckets: one record per pod, one per container, by ID.
var (
	Pods       = []byte("pods")
	Containers = []byte("containers")
)

// ErrLocked: another process holds the metadata file.
var ErrLocked = errors.New("metadata file locked")

// Open opens (creating it if need be) the metadata file at path and starts
// its committer.
func Open(path string) (*Metadata, error) {
	// The freelist is not written on each commit (fewer pages to sync per
	// write); bbolt rebuilds it by scanning the file when it opens it.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("metadata %s is locked: is another peapod running with the same --root?: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{Pods, Containers} {
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
	s := &Metadata{db: db, writes: make(chan *storeWrite), done: make(chan struct{})}
	go s.commitLoop()
	return s, nil
}

// Close stops the committer (no write may be in progress or follow) and
// closes the file.
func (s *Metadata) Close() error {
	s.mu.Lock()
	s.closed = true
	close(s.writes)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}

// Put writes v, as JSON, as the record of id in bucket, once committed.
func (s *Metadata) Put(bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", id, err)
	}
	return s.write(&storeWrite{bucket: bucket, id: id, data: data})
}

// Delete removes the record of id from bucket, once committed.
func (s *Metadata) Delete(bucket []byte, id string) error {
	return s.write(&storeWrite{bucket: bucket, id: id})
}

// write hands w to the committer and waits until it is committed. After
// close (an exit recorded while the daemon shuts down) it fails as bbolt
// does on a closed file.
func (s *Metadata) write(w *storeWrite) error {
	w.result = make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return bolterrors.ErrDatabaseNotOpen
	}
	s.writes <- w
	s.mu.RUnlock()
	return <-w.result
}

// commitLoop commits each write together with those queued behind it.
func (s *Metadata) commitLoop() {
	defer close(s.done)
	for w := range s.writes {
		group := []*storeWrite{w}
		// Let writers woken by the last commit queue up behind this one
		// (a yield, microseconds; not a timed wait).
		runtime.Gosched()
	gather:
		for len(group) < maxGroup {
			select {
			case more, ok := <-s.writes:
				if !ok {
					break gather
				}
				group = append(group, more)
			default:
				break gather
			}
		}
		err := s.commit(group)
		if err != nil && len(group) > 1 {
			// One bad write must not fail the others: each alone.
			for _, w := range group {
				w.result <- s.commit([]*storeWrite{w})
			}
			continue
		}
		for _, w := range group {
			w.result <- err
		}
	}
}

// commit applies the writes in one transaction.
func (s *Metadata) commit(group []*storeWrite) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range group {
			b := tx.Bucket(w.bucket)
			var err error
			if w.data != nil {
				err = b.Put([]byte(w.id), w.data)
			} else {
				err = b.Delete([]byte(w.id))
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", w.id, err)
			}
		}
		return nil
	})
}

// Each decodes every record of bucket with decode; a record that cannot be
// decoded is reported, not skipped silently.
func (s *Metadata) Each(bucket []byte, decode func(id string, data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			return decode(string(k), v)
		})
	})
}
