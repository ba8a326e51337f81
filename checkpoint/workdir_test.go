package checkpoint

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWorkDirSweepsAbandoned: a daemon killed mid-checkpoint leaves its
// work directory (CRIU's images: the container's memory) beside the
// archive; the next checkpoint there removes it, never one still running.
func TestWorkDirSweepsAbandoned(t *testing.T) {
	dir := t.TempDir()
	// What a crash leaves: nobody holds its lock.
	crashed := filepath.Join(dir, WorkDirPrefix+"crashed")
	os.MkdirAll(filepath.Join(crashed, ImagesDirectory), 0o700)
	os.WriteFile(filepath.Join(crashed, ImagesDirectory, "pages-1.img"), []byte("secret memory"), 0o600)
	os.WriteFile(filepath.Join(crashed, ".ckpt.tar.tmp-1"), []byte("half an archive"), 0o600)
	other := filepath.Join(dir, "unrelated")
	os.Mkdir(other, 0o700)

	running, err := NewWorkDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); !os.IsNotExist(err) {
		t.Fatalf("the crashed checkpoint's directory is still there (%v)", err)
	}
	second, err := NewWorkDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(running.Path); err != nil {
		t.Fatalf("a running checkpoint's directory was swept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("a directory not named %s* was swept: %v", WorkDirPrefix, err)
	}
	running.Remove()
	second.Remove()
	if n := SweepWorkDirs(dir); n != 0 {
		t.Errorf("SweepWorkDirs after both removed = %d, want 0", n)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the directory: %v, want only %s", entries, other)
	}
}
