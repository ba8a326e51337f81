package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The walk counts what du --apparent-size --inodes would: every inode once,
// the sizes of files and symlinks, hard links once, never following a
// symlink out of the layer.
func TestWalkUsageCounts(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "big"), make([]byte, 1<<20), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "a/b"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "a/f"), make([]byte, 100), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "a/b/g"), make([]byte, 23), 0o644))
	must(t, os.Link(filepath.Join(dir, "a/f"), filepath.Join(dir, "a/b/f-link")))
	must(t, os.Symlink(outside, filepath.Join(dir, "escape"))) // size len(outside)
	must(t, os.Symlink(filepath.Join(outside, "big"), filepath.Join(dir, "a/big")))
	u, err := walkUsage(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// Inodes: dir, a, a/b, a/f (= f-link), a/b/g, escape, a/big.
	wantBytes := uint64(100 + 23 + len(outside) + len(filepath.Join(outside, "big")))
	if u.Inodes != 7 || u.Bytes != wantBytes {
		t.Errorf("usage %d inodes, %d bytes; want 7, %d", u.Inodes, u.Bytes, wantBytes)
	}
}

// A chain deeper than PATH_MAX allows as one path is measured whole with
// one descriptor per level at most twice; a comb (each level with a second,
// empty subdirectory) deeper than the descriptor window is measured whole
// with at most fdWindow+1 descriptors.
func TestWalkUsageDeepTree(t *testing.T) {
	for _, comb := range []bool{false, true} {
		depth := 3000 // 63 KB of path
		if comb {
			depth = 2 * fdWindow // past the window; quadratic beyond it
		}
		dir := t.TempDir()
		name := strings.Repeat("d", 20)
		makeDeep(t, dir, name, depth, comb)
		t.Cleanup(func() { removeDeep(dir, name) })
		u, err := walkUsage(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		inodes := uint64(depth + 2)
		if comb {
			inodes += uint64(depth)
		}
		if u.Inodes != inodes || u.Bytes != uint64(len("hidden deep")) {
			t.Errorf("comb %v: usage %d inodes, %d bytes; want %d, %d", comb, u.Inodes, u.Bytes, inodes, len("hidden deep"))
		}
		limit := 2
		if comb {
			limit = fdWindow + 1
		}
		if u.maxFDs > limit {
			t.Errorf("comb %v: %d directory descriptors held at once, want at most %d", comb, u.maxFDs, limit)
		}
		t.Logf("comb %v: %d levels, at most %d descriptors", comb, depth, u.maxFDs)
	}
}

// makeDeep makes dir/name/name/… depth levels down with a file "leaf" at
// the bottom and, for a comb, an empty directory "e" beside each name.
func makeDeep(t *testing.T, dir, name string, depth int, comb bool) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	must(t, err)
	for range depth {
		must(t, unix.Mkdirat(fd, name, 0o755))
		if comb {
			must(t, unix.Mkdirat(fd, "e", 0o755))
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		must(t, err)
		unix.Close(fd)
		fd = next
	}
	f, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
	must(t, err)
	unix.Write(f, []byte("hidden deep"))
	unix.Close(f)
	unix.Close(fd)
}

// Hard links past maxLinkedInodes are counted again rather than
// remembered: the inode set stays bounded.
func TestWalkUsageLinkedInodesBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("makes many files")
	}
	dir := t.TempDir()
	// Enough pairs of links to pass the bound would be 1M files; the bound
	// is checked with a small tree and the overflow counter instead.
	for i := range 10 {
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		must(t, os.WriteFile(p, []byte("x"), 0o644))
		must(t, os.Link(p, p+"-2"))
	}
	w := &usageWalker{ctx: context.Background(), linked: map[uint64]struct{}{}}
	for i := range maxLinkedInodes - 4 {
		w.linked[uint64(1<<40+i)] = struct{}{} // fill the set with foreign inodes
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	must(t, w.dir(fd, -1, nil, true))
	if len(w.linked) != maxLinkedInodes {
		t.Errorf("inode set holds %d, want the bound %d", len(w.linked), maxLinkedInodes)
	}
	// 4 inodes remembered (counted once each), 6 counted twice.
	if w.u.Inodes != 4+12 || w.u.linkedOverflow != 12 {
		t.Errorf("%d inodes counted, %d past the bound; want 16, 12", w.u.Inodes, w.u.linkedOverflow)
	}
}

// A cancelled walk stops.
func TestWalkUsageCancelled(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "a/b/c"), 0o755))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := walkUsage(ctx, dir); err == nil {
		t.Error("a cancelled walk succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// removeDeep removes a chain of directories too deep for os.RemoveAll's
// paths: from the bottom up, through descriptors.
func removeDeep(dir, name string) {
	var fds []int
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return
	}
	for {
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			break
		}
		fds = append(fds, fd)
		fd = next
	}
	unix.Unlinkat(fd, "leaf", 0)
	unix.Close(fd)
	for i := len(fds) - 1; i >= 0; i-- {
		unix.Unlinkat(fds[i], name, unix.AT_REMOVEDIR)
		unix.Unlinkat(fds[i], "e", unix.AT_REMOVEDIR)
		unix.Close(fds[i])
	}
}
