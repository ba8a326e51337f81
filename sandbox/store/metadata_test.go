package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Concurrent writers share commits; every write is there after a reopen,
// deletes included, and a write after close fails instead of panicking.
func TestMetadataStoreGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := s.Put(Pods, id, map[string]int{"i": i}); err != nil {
					errs <- err
				}
				if i%2 == 1 {
					if err := s.Delete(Pods, id); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(Pods, "late", 1); err == nil {
		t.Fatal("a write after close succeeded")
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string]bool{}
	if err := s.Each(Pods, func(id string, _ []byte) error { got[id] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*each/2 {
		t.Fatalf("%d records after reopen, want %d", len(got), writers*each/2)
	}
	for w := range writers {
		for i := range each {
			if id := fmt.Sprintf("w%d-%d", w, i); got[id] != (i%2 == 0) {
				t.Fatalf("record %s present=%v", id, got[id])
			}
		}
	}
}

// BenchmarkMetadataStoreWrites compares writers through the group commit
// with the same writers each committing alone (one bbolt transaction and
// fsync pair per write), on the test's disk: 10 concurrent writers, and
// one (the latency of a lone write must not grow).
func BenchmarkMetadataStoreWrites(b *testing.B) {
	rec := map[string]string{"config": string(make([]byte, 2048))}
	for _, mode := range []string{"group", "alone", "group-1", "alone-1"} {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "metadata.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data, _ := json.Marshal(rec)
			write := func(id string) error {
				if strings.HasPrefix(mode, "group") {
					return s.Put(Containers, id, rec)
				}
				return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(Containers).Put([]byte(id), data) })
			}
			if strings.HasSuffix(mode, "-1") {
				for i := range b.N {
					if err := write(fmt.Sprint("c", i)); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(5) // 10 writers on 2 CPUs
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := write(fmt.Sprintf("c%d", n.Add(1))); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
