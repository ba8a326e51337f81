package sandbox

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// Concurrent writers share commits; every write is there after a reopen,
// deletes included, and a write after close fails instead of panicking.
func TestMetadataStoreGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	s, err := openMetadataStore(path)
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
				if err := s.put(bucketPods, id, map[string]int{"i": i}); err != nil {
					errs <- err
				}
				if i%2 == 1 {
					if err := s.delete(bucketPods, id); err != nil {
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
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if err := s.put(bucketPods, "late", 1); err == nil {
		t.Fatal("a write after close succeeded")
	}

	s, err = openMetadataStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	got := map[string]bool{}
	if err := s.each(bucketPods, func(id string, _ []byte) error { got[id] = true; return nil }); err != nil {
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
