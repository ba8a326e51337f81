package image

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// BenchmarkRootfsAtScale compares, in one run, a container's root
// filesystem made as a containers/storage container (what peapod did
// before session 14, and still does for user-namespaced containers: here
// through IDs that are not container IDs) with one made by the driver and
// recorded by peapod (rwlayer.go), on a store that already holds
// ROOTFS_SCALE_N (2000) of the same kind, as a node keeps its exited
// containers. Each sample creates and mounts one root filesystem
// (CreateContainer's share), unmounts it (the exit) and removes it
// (RemoveContainer); the two stores take turns sample by sample.
//
//	go test -tags "$(cat build-tags.txt)" -run '^$' -bench BenchmarkRootfsAtScale -benchtime 1x ./image/
func BenchmarkRootfsAtScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (overlay storage)")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("ROOTFS_SCALE_N")); err == nil && v >= 0 {
		n = v
	}
	const samples = 40
	ctx := context.Background()
	addr := testenv.StartRegistry(b)
	testenv.PushImage(b, addr, "library/busybox:latest", testenv.BusyboxRootfs(b), testenv.ImageConfig{Cmd: []string{"sh"}})
	kinds := []struct {
		name string
		id   func(i int) string
	}{
		{"c/storage container", func(i int) string { return fmt.Sprintf("old-%d", i) }},
		{"driver layer (rwlayer.go)", func(i int) string { return fmt.Sprintf("%064x", 0xbe0000+i) }},
	}
	stores := make([]*Store, len(kinds))
	images := make([]string, len(kinds))
	for k, kind := range kinds {
		s, _ := openTestStoreWith(b, addr, nil)
		img, err := s.Pull(ctx, "busybox", nil)
		if err != nil {
			b.Fatal(err)
		}
		stores[k], images[k] = s, img.ID
		t0 := time.Now()
		for i := 0; i < n; i++ {
			id := kind.id(i)
			if _, err := s.CreateRootfs(ctx, id, img.ID); err != nil {
				b.Fatal(err)
			}
			if err := s.UnmountRootfs(ctx, id); err != nil { // exited
				b.Fatal(err)
			}
		}
		fmt.Printf("%s: %d exited containers' layers made in %v\n", kind.name, n, time.Since(t0).Round(time.Millisecond))
	}
	create := make([][]time.Duration, len(kinds))
	remove := make([][]time.Duration, len(kinds))
	b.ResetTimer()
	for i := 0; i < samples; i++ {
		for j := range kinds {
			k := (i + j) % len(kinds) // alternate which goes first
			s, id := stores[k], kinds[k].id(n+i)
			t0 := time.Now()
			if _, err := s.CreateRootfs(ctx, id, images[k]); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := s.UnmountRootfs(ctx, id); err != nil {
				b.Fatal(err)
			}
			if err := s.RemoveRootfs(ctx, id); err != nil {
				b.Fatal(err)
			}
			create[k] = append(create[k], t1.Sub(t0))
			remove[k] = append(remove[k], time.Since(t1))
		}
	}
	b.StopTimer()
	p := func(d []time.Duration, q float64) float64 {
		sort.Slice(d, func(a, b int) bool { return d[a] < d[b] })
		return float64(d[int(q*float64(len(d)-1))].Microseconds()) / 1000
	}
	for k, kind := range kinds {
		fmt.Printf("%-26s at %d: create+mount p50 %.2f p99 %.2f ms; unmount+remove p50 %.2f p99 %.2f ms (%d samples)\n",
			kind.name, n, p(create[k], 0.5), p(create[k], 0.99), p(remove[k], 0.5), p(remove[k], 0.99), samples)
	}
}
