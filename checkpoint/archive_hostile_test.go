package checkpoint

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The container keeps running while its writable layer is archived
// (CheckpointContainer leaves it running), so it can swap what is in its
// upper directory between the walk's look at a name and the open of it.
// These tests do what such a container does, with renameat2's atomic
// exchange in a tight loop, against a real directory tree: what the
// archive may hold is only what the upper directory holds, and no FIFO or
// device node on the host is ever opened.

// exchanger swaps a and b (renameat2 RENAME_EXCHANGE) until stopped.
func exchanger(t *testing.T, a, b string) (stop func()) {
	t.Helper()
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("exchange %s and %s: %v", a, b, err)
				return
			}
		}
	}()
	return func() { done.Store(true); wg.Wait() }
}

// archiveOnce writes one archive of upper and returns its rootfs diff, or
// an error; a write that does not finish in 10 s is reported as hung.
func archiveOnce(t *testing.T, upper string) ([]byte, error) {
	t.Helper()
	location := filepath.Join(t.TempDir(), "c.tar")
	images := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- WriteArchive(location, Contents{Spec: []byte("{}"), Images: images, Upper: upper})
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-time.After(10 * time.Second):
		return nil, errors.New("hung")
	}
	f, err := os.Open(location)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return []byte(readTar(t, f)[RootfsDiffFile]), nil
}

// A directory of the upper swapped with a symlink to a host directory: the
// archive must never hold the host directory's files.
func TestWriteArchiveUpperSymlinkSwap(t *testing.T) {
	base := t.TempDir()
	upper, side, host := filepath.Join(base, "upper"), filepath.Join(base, "side"), filepath.Join(base, "host")
	for _, d := range []string{filepath.Join(upper, "d"), side, host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Same name and size in both, so a mixed-up read is not caught by
	// the tar writer's size check.
	os.WriteFile(filepath.Join(upper, "d", "secret"), []byte("container!"), 0o644)
	os.WriteFile(filepath.Join(host, "secret"), []byte("HOSTSECRET"), 0o600)
	os.WriteFile(filepath.Join(host, "shadow"), []byte("HOSTSHADOW"), 0o600)
	if err := os.Symlink(host, filepath.Join(side, "d")); err != nil {
		t.Fatal(err)
	}
	stop := exchanger(t, filepath.Join(upper, "d"), filepath.Join(side, "d"))
	defer stop()

	deadline := time.Now().Add(8 * time.Second)
	runs, failed := 0, 0
	for time.Now().Before(deadline) && runs < 300 {
		runs++
		diff, err := archiveOnce(t, upper)
		if err != nil {
			if err.Error() == "hung" {
				t.Fatalf("archive %d hung", runs)
			}
			failed++ // the container made its own checkpoint fail: allowed
			continue
		}
		if bytes.Contains(diff, []byte("HOSTSECRET")) || bytes.Contains(diff, []byte("HOSTSHADOW")) {
			t.Fatalf("archive %d of %d holds a host file read through a symlink the container swapped in", runs, runs)
		}
	}
	t.Logf("%d archives (%d failed as the container raced them), none with a host file", runs, failed)
}

// A regular file of the upper swapped with a FIFO (or a device node):
// opening it on the host would block the daemon for ever (or open a host
// device). The archive must finish, with neither opened.
func TestWriteArchiveUpperFIFOSwap(t *testing.T) {
	base := t.TempDir()
	upper, side := filepath.Join(base, "upper"), filepath.Join(base, "side")
	os.MkdirAll(upper, 0o755)
	os.MkdirAll(side, 0o755)
	os.WriteFile(filepath.Join(upper, "f"), []byte("data"), 0o644)
	fifo := filepath.Join(side, "f")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stop := exchanger(t, filepath.Join(upper, "f"), fifo)
	defer func() {
		stop()
		// A reader blocked in open on the old code is released by a
		// writer; without one it stays blocked after the test.
		for _, p := range []string{filepath.Join(upper, "f"), fifo} {
			if fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				unix.Close(fd)
			}
		}
	}()
	deadline := time.Now().Add(8 * time.Second)
	runs := 0
	for time.Now().Before(deadline) && runs < 300 {
		runs++
		if _, err := archiveOnce(t, upper); err != nil && strings.Contains(err.Error(), "hung") {
			t.Fatalf("archive %d hung opening a FIFO the container swapped in", runs)
		}
	}
	t.Logf("%d archives, none hung", runs)
}

// A sparse file costs the container no disk block (nor ephemeral-storage:
// the kubelet counts blocks), but an archive writes it out whole, twice
// (the diff's temporary tar, then the archive): a terabyte "file" filled
// the node's disk at the checkpoint. The archive is refused before it
// would leave less than a tenth of its filesystem free, and what fits
// still archives.
func TestWriteArchiveUpperSparseFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	// The location on a 64 MiB tmpfs of its own: the old code filled it,
	// and must not fill a disk the machine shares.
	locDir := t.TempDir()
	if err := unix.Mount("tmpfs", locDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m,mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(locDir, unix.MNT_DETACH) })
	upper := t.TempDir()
	f, err := os.Create(filepath.Join(upper, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil { // 1 GiB of holes, no block
		t.Fatal(err)
	}
	f.Close()

	var peak atomic.Int64 // percent of the tmpfs used, sampled
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var st unix.Statfs_t
			if unix.Statfs(locDir, &st) == nil {
				if used := int64(100 - st.Bavail*100/st.Blocks); used > peak.Load() {
					peak.Store(used)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	location := filepath.Join(locDir, "c.tar")
	err = WriteArchive(location, Contents{Spec: []byte("{}"), Images: t.TempDir(), Upper: upper})
	close(stop)
	<-sampled
	if !errors.Is(err, ErrNoSpace) {
		t.Errorf("archive of a 1 GiB sparse file on a 64 MiB filesystem: %v, want ErrNoSpace before writing", err)
	}
	if p := peak.Load(); p > 10 {
		t.Errorf("the archive filled its filesystem to %d%% before failing", p)
	}
	if left, _ := os.ReadDir(locDir); len(left) > 0 {
		t.Errorf("a refused archive left %v", left)
	}

	// 8 MiB of holes fit (written twice, 16 of 64 MiB).
	if err := os.Truncate(filepath.Join(upper, "sparse"), 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(location, Contents{Spec: []byte("{}"), Images: t.TempDir(), Upper: upper}); err != nil {
		t.Errorf("archive of an 8 MiB sparse file on a 64 MiB filesystem: %v", err)
	}
}
