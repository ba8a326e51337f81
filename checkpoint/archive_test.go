package checkpoint

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// readTar returns the archive's entries: name → content (directories
// and links map to "").
func readTar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[hdr.Name] = string(b)
		if hdr.Typeflag == tar.TypeSymlink {
			out[hdr.Name] = "-> " + hdr.Linkname
		}
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

func TestWriteArchiveLayout(t *testing.T) {
	upper := t.TempDir()
	os.MkdirAll(filepath.Join(upper, "tmp"), 0o1777)
	os.WriteFile(filepath.Join(upper, "tmp", "count"), []byte("42\n"), 0o644)
	os.Symlink("count", filepath.Join(upper, "tmp", "link"))
	os.MkdirAll(filepath.Join(upper, "etc"), 0o755)
	// overlayfs's whiteout of /etc/motd: a 0:0 character device.
	if err := unix.Mknod(filepath.Join(upper, "etc", "motd"), unix.S_IFCHR, 0); err != nil {
		t.Skipf("mknod whiteout (needs root): %v", err)
	}
	images := t.TempDir()
	os.WriteFile(filepath.Join(images, "pages-1.img"), []byte("pages"), 0o600)
	os.WriteFile(filepath.Join(images, "inventory.img"), []byte("inv"), 0o600)

	location := filepath.Join(t.TempDir(), "c.tar")
	err := WriteArchive(location, Contents{
		Config: Config{ID: "abc", Name: "counter", RootfsImageName: "busybox:it"},
		Spec:   []byte(`{"ociVersion":"1.2.0"}`),
		Images: images,
		Upper:  upper,
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(location)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive %v, %v: want mode 0600 (it holds process memory)", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(location), ".*")); len(left) > 0 {
		t.Errorf("temporary files left beside the archive: %v", left)
	}
	f, _ := os.Open(location)
	defer f.Close()
	got := readTar(t, f)
	for _, want := range []string{ConfigDumpFile, SpecDumpFile, DeletedFilesFile, RootfsDiffFile,
		"checkpoint/", "checkpoint/pages-1.img", "checkpoint/inventory.img"} {
		if _, ok := got[want]; !ok {
			t.Errorf("archive lacks %s; has %v", want, keys(got))
		}
	}
	var cfg Config
	if err := json.Unmarshal([]byte(got[ConfigDumpFile]), &cfg); err != nil || cfg.ID != "abc" || cfg.Name != "counter" {
		t.Errorf("config.dump = %s (%v)", got[ConfigDumpFile], err)
	}
	var deleted []string
	if err := json.Unmarshal([]byte(got[DeletedFilesFile]), &deleted); err != nil || len(deleted) != 1 || deleted[0] != "/etc/motd" {
		t.Errorf("deleted.files = %s (%v), want [\"/etc/motd\"]", got[DeletedFilesFile], err)
	}
	diff := readTar(t, bytes.NewReader([]byte(got[RootfsDiffFile])))
	if diff["tmp/count"] != "42\n" || diff["tmp/link"] != "-> count" {
		t.Errorf("rootfs-diff.tar = %v, want tmp/count and the tmp/link symlink", diff)
	}
	if _, ok := diff["etc/motd"]; ok {
		t.Errorf("rootfs-diff.tar carries the whiteout etc/motd")
	}
}

func TestWriteArchiveFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	location := filepath.Join(dir, "c.tar")
	err := WriteArchive(location, Contents{Images: filepath.Join(dir, "missing")})
	if err == nil {
		t.Fatal("WriteArchive with missing CRIU images succeeded")
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("a failed archive left %v", left)
	}
}
