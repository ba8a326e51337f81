package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/integration/testenv"
)

func rwTestID(i int) string { return fmt.Sprintf("%064x", i+0xc0ffee) }

// recordFiles are containers/storage's whole-file records of containers
// and layers, which it rewrites whole on every change.
var recordFiles = []string{
	"overlay-containers/containers.json", "overlay-containers/volatile-containers.json",
	"overlay-layers/layers.json", "overlay-layers/volatile-layers.json",
}

func recordStamps(t *testing.T, graph string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, f := range recordFiles {
		if st, err := os.Stat(filepath.Join(graph, f)); err == nil {
			out[f] = st.ModTime()
		}
	}
	return out
}

// A container's writable layer is the driver's, recorded by one file of
// peapod's: making, mounting, unmounting and removing containers never
// rewrites containers/storage's record files (what made each create
// O(containers on the node)). The layer survives a reopen, reports its
// usage, keeps its image from removal and from the orphan-layer
// collection, and goes with RemoveRootfs.
func TestRWLayerLifecycle(t *testing.T) {
	ctx := context.Background()
	s, dir, img := storeWithBusybox(t)
	graph := filepath.Join(dir, "root", "storage")
	before := recordStamps(t, graph)
	time.Sleep(20 * time.Millisecond) // a rewrite would show in the mtime

	ids := []string{rwTestID(1), rwTestID(2), rwTestID(3)}
	mps := map[string]string{}
	for _, id := range ids {
		mp, err := s.CreateRootfs(ctx, id, img.ID)
		if err != nil {
			t.Fatalf("CreateRootfs %s: %v", id, err)
		}
		if mp != filepath.Join(graph, "overlay", id, "merged") {
			t.Errorf("rootfs of %s mounted at %s, want the driver's layer named after the container", id, mp)
		}
		if _, err := os.Stat(filepath.Join(mp, "bin/busybox")); err != nil {
			t.Fatalf("rootfs lacks busybox: %v", err)
		}
		mps[id] = mp
	}
	if err := os.WriteFile(filepath.Join(mps[ids[0]], "written"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, used, inodes, err := s.RootfsUsage(ctx, ids[0]); err != nil || used < 8192 || inodes < 1 {
		t.Errorf("RootfsUsage = %d bytes %d inodes, %v; want the 8 KiB file", used, inodes, err)
	}
	if err := s.UnmountRootfs(ctx, ids[1]); err != nil || contains(mountsUnder(t, dir), mps[ids[1]]) {
		t.Errorf("UnmountRootfs: %v (mounted: %v)", err, contains(mountsUnder(t, dir), mps[ids[1]]))
	}
	if err := s.RemoveRootfs(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(graph, "overlay", ids[2])); !os.IsNotExist(err) {
		t.Errorf("layer directory of a removed container: %v", err)
	}
	if _, err := os.Stat(filepath.Join(graph, rwRecordDir, ids[2])); !os.IsNotExist(err) {
		t.Errorf("record of a removed container's layer: %v", err)
	}
	if after := recordStamps(t, graph); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("containers/storage's record files changed with containers' layers: %v, before %v", after, before)
	}

	// In use: neither the image nor its layers go.
	if err := s.Remove(ctx, img.ID); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove of an image a writable layer stands on: %v, want ErrInUse", err)
	}
	if err := s.removeOrphanLayers(); err != nil {
		t.Fatal(err)
	}
	if top := topLayer(t, s, img.ID); top == "" {
		t.Errorf("the image's top layer after the orphan-layer collection: gone")
	}

	// Reopened (a daemon restart): the layers are known, the mounted one
	// mounted again at the same place, the unmounted one remountable.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, dir); contains(m, mps[ids[0]]) {
		t.Errorf("Close left %s mounted", mps[ids[0]])
	}
	s2 := reopen(t, dir)
	rec, err := s2.RootfsRecorded(ids[:2])
	if err != nil || !rec[ids[0]] || !rec[ids[1]] {
		t.Errorf("RootfsRecorded after reopen = %v, %v", rec, err)
	}
	for _, id := range ids[:2] {
		mp, err := s2.CreateRootfs(ctx, id, img.ID)
		if err != nil || mp != mps[id] {
			t.Fatalf("CreateRootfs after reopen = %q, %v (was %q)", mp, err, mps[id])
		}
		// Mounted once: one unmount unmounts.
		if mp2, err := s2.CreateRootfs(ctx, id, img.ID); err != nil || mp2 != mp {
			t.Fatalf("CreateRootfs again = %q, %v", mp2, err)
		}
		if err := s2.UnmountRootfs(ctx, id); err != nil || contains(mountsUnder(t, dir), mp) {
			t.Errorf("UnmountRootfs after reopen: %v (mounted: %v)", err, contains(mountsUnder(t, dir), mp))
		}
	}
	if _, err := os.ReadFile(filepath.Join(mps[ids[0]], "written")); err == nil {
		t.Errorf("file readable through an unmounted rootfs")
	}
	if _, err := s2.CreateRootfs(ctx, ids[0], img.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mps[ids[0]], "written")); err != nil {
		t.Errorf("the container's file after a remount: %v", err)
	}

	// The collection keeps what a container record names, removes the
	// rest (with its directory), and keeps the image's layers under the
	// kept one.
	got, err := s2.CollectGarbage(func(id string) bool { return id == ids[0] })
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Containers) != 1 || got.Containers[0] != ids[1] || len(got.Layers) != 0 {
		t.Errorf("CollectGarbage = %+v, want only %s's layer removed", got, ids[1])
	}
	if _, err := os.Stat(filepath.Join(graph, "overlay", ids[1])); !os.IsNotExist(err) {
		t.Errorf("collected layer's directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mps[ids[0]], "written")); err != nil {
		t.Errorf("kept layer after the collection: %v", err)
	}
	if err := s2.RemoveRootfs(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := s2.Remove(ctx, img.ID); err != nil {
		t.Errorf("Remove of the image once no layer stands on it: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(graph, rwRecordDir)); len(ents) != 0 {
		t.Errorf("records left: %v", ents)
	}
}

// An unreadable record of a writable layer does not stop the store: it is
// moved aside and reported (the daemon then repairs), the layer counts as
// lost, the collection removes it, and a RemoveRootfs before any repair
// still removes the layer.
func TestRWLayerCorruptRecord(t *testing.T) {
	ctx := context.Background()
	s, dir, img := storeWithBusybox(t)
	graph := filepath.Join(dir, "root", "storage")
	a, b := rwTestID(10), rwTestID(11)
	for _, id := range []string{a, b} {
		if _, err := s.CreateRootfs(ctx, id, img.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{a, b} {
		if err := os.WriteFile(filepath.Join(graph, rwRecordDir, id), []byte(`{"parent":"../../x"`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := reopen(t, dir)
	if moved := s2.RecordsMovedAside(); len(moved) != 2 {
		t.Errorf("RecordsMovedAside = %v, want both records", moved)
	}
	if rec, err := s2.RootfsRecorded([]string{a}); err != nil || rec[a] {
		t.Errorf("RootfsRecorded of a layer whose record is unreadable = %v, %v", rec, err)
	}
	if err := s2.RemoveRootfs(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(graph, "overlay", b)); !os.IsNotExist(err) {
		t.Errorf("RemoveRootfs left the layer whose record was unreadable: %v", err)
	}
	got, err := s2.CollectGarbage(func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(got.DriverDirs) != 1 || got.DriverDirs[0] != a {
		t.Errorf("CollectGarbage's removed layer directories = %v, want %s's", got.DriverDirs, a)
	}
	if _, err := os.Stat(filepath.Join(graph, "overlay", a)); !os.IsNotExist(err) {
		t.Errorf("the collection left the layer whose record was unreadable: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(graph, rwRecordDir)); len(ents) != 0 {
		t.Errorf("records left after the repair (the moved-aside ones go with it): %v", ents)
	}
	if top := topLayer(t, s2, img.ID); top == "" {
		t.Errorf("the image's layer after the collection: gone")
	}
}

// topLayer is the image's top layer, "" when it or the layer is gone.
func topLayer(t *testing.T, s *Store, imageID string) string {
	t.Helper()
	simg, err := s.lookup(imageID)
	if err != nil {
		return ""
	}
	if _, err := s.store.Layer(simg.TopLayer); err != nil {
		return ""
	}
	return simg.TopLayer
}

// storeWithBusybox is a test store (openTestStore) with busybox pulled
// from a test registry.
func storeWithBusybox(t *testing.T) (*Store, string, *Image) {
	t.Helper()
	addr := testenv.StartRegistry(t)
	testenv.PushImage(t, addr, "library/busybox:latest", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	s, dir := openTestStore(t, addr)
	img, err := s.Pull(context.Background(), "busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir, img
}

// reopen opens the store of openTestStore's dir again (a daemon restart).
func reopen(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Config{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run"), RegistriesConf: filepath.Join(dir, "registries.conf")})
	if err != nil {
		t.Fatalf("reopen the store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
