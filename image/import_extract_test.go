package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestExtractTarBoundedBySpace: `peapod image import` of a gzip-compressed
// OCI layout tar unpacked it whole into the store's temporary directory,
// whatever size it expanded to: a 200 KiB file naming 256 MiB of zeros
// filled the filesystem. Now the sizes are charged against the free space
// before anything is written, keeping a tenth of the filesystem free.
func TestExtractTarBoundedBySpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m,mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })

	bomb := filepath.Join(t.TempDir(), "layout.tar.gz")
	f, err := os.Create(bomb)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "oci-layout", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
	tw.Write([]byte("{}"))
	const size = 256 << 20
	tw.WriteHeader(&tar.Header{Name: "blobs/sha256/zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
	zeros := make([]byte, 1<<20)
	for i := 0; i < size>>20; i++ {
		tw.Write(zeros)
	}
	tw.Close()
	zw.Close()
	f.Close()
	if fi, _ := os.Stat(bomb); fi != nil {
		t.Logf("archive: %d KiB, expands to %d MiB", fi.Size()>>10, size>>20)
	}

	out := filepath.Join(dir, "import-1")
	os.Mkdir(out, 0o700)
	err = extractTar(context.Background(), bomb, out)
	var st unix.Statfs_t
	unix.Statfs(dir, &st)
	usedPct := 100 - 100*int64(st.Bavail)/int64(st.Blocks)
	t.Logf("extractTar: %v; tmpfs %d%% used", err, usedPct)
	if !errors.Is(err, ErrNoSpace) {
		t.Errorf("extractTar = %v, want ErrNoSpace", err)
	}
	if usedPct > 10 {
		t.Errorf("the extraction filled %d%% of its filesystem before it stopped", usedPct)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	os.Mkdir(filepath.Join(dir, "import-2"), 0o700)
	if err := extractTar(ctx, bomb, filepath.Join(dir, "import-2")); !errors.Is(err, context.Canceled) {
		t.Errorf("extractTar with a cancelled context = %v, want context.Canceled", err)
	}
}
