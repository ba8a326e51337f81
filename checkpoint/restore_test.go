package checkpoint

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// entry is one tar entry of a hand-made archive.
type entry struct {
	hdr  tar.Header
	data string
}

func file(name, data string) entry {
	return entry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, data}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// good is a well-formed archive's entries, with the diff given.
func good(t *testing.T, diff []byte, deleted string) []entry {
	cfg, _ := json.Marshal(Config{ID: "abc", Name: "counter", RootfsImageRef: "sha256:1234"})
	return []entry{
		file(ConfigDumpFile, string(cfg)),
		file(SpecDumpFile, `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}`),
		file(DeletedFilesFile, deleted),
		file(RootfsDiffFile, string(diff)),
		dir(ImagesDirectory + "/"),
		file(ImagesDirectory+"/inventory.img", "inv"),
		file(ImagesDirectory+"/descriptors.json", `["/dev/null","pipe:[1]","pipe:[2]"]`),
		file(ImagesDirectory+"/pages-1.img", "pages"),
	}
}

func writeArchive(t *testing.T, entries ...entry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ckpt.tar")
	if err := os.WriteFile(p, tarOf(t, entries...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenRestoreRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown of the diff's entries needs root")
	}
	diff := tarOf(t,
		dir("tmp/"),
		file("tmp/count", "42\n"),
		entry{hdr: tar.Header{Name: "tmp/link", Typeflag: tar.TypeSymlink, Linkname: "count"}},
		entry{hdr: tar.Header{Name: "tmp/hard", Typeflag: tar.TypeLink, Linkname: "tmp/count"}},
		entry{tar.Header{Name: "new/deep/file", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1000, Gid: 1000, Size: 2}, "hi"},
		file("etc/replaced", "new"), // a directory in the image, a file now
	)
	p := writeArchive(t, good(t, diff, `["/etc/motd","/var/gone"]`)...)
	a, err := Open(p, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if a.Config.Name != "counter" || a.Spec.Process.Args[0] != "sh" || len(a.Deleted) != 2 {
		t.Errorf("Open = %+v, spec %+v", a.Config, a.Spec.Process)
	}

	images := t.TempDir()
	if err := a.ExtractImages(images); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"inventory.img", "descriptors.json", "pages-1.img"} {
		fi, err := os.Stat(filepath.Join(images, n))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("image %s: %v, %v; want mode 0600", n, fi, err)
		}
	}
	if _, err := os.Stat(filepath.Join(images, ConfigDumpFile)); err == nil {
		t.Errorf("ExtractImages wrote %s, not an image", ConfigDumpFile)
	}

	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "etc", "replaced", "sub"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "etc", "motd"), []byte("hello"), 0o644)
	os.MkdirAll(filepath.Join(rootfs, "var", "gone", "inner"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "tmp-keep"), nil, 0o644)
	if err := a.ApplyRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	read := func(n string) string { b, _ := os.ReadFile(filepath.Join(rootfs, n)); return string(b) }
	if got := read("tmp/count"); got != "42\n" {
		t.Errorf("tmp/count = %q", got)
	}
	if l, _ := os.Readlink(filepath.Join(rootfs, "tmp/link")); l != "count" {
		t.Errorf("tmp/link -> %q", l)
	}
	var a1, a2 unix.Stat_t
	unix.Stat(filepath.Join(rootfs, "tmp/count"), &a1)
	unix.Stat(filepath.Join(rootfs, "tmp/hard"), &a2)
	if a1.Ino != a2.Ino {
		t.Errorf("tmp/hard is not a hard link of tmp/count")
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(rootfs, "new/deep/file"), &st); err != nil || st.Uid != 1000 || st.Mode&0o7777 != 0o4755 {
		t.Errorf("new/deep/file: uid %d mode %o, %v; want 1000 and 4755", st.Uid, st.Mode&0o7777, err)
	}
	if got := read("etc/replaced"); got != "new" {
		t.Errorf("etc/replaced = %q, want the diff's file in place of the directory", got)
	}
	for _, gone := range []string{"etc/motd", "var/gone"} {
		if _, err := os.Lstat(filepath.Join(rootfs, gone)); !os.IsNotExist(err) {
			t.Errorf("%s (deleted.files) still there: %v", gone, err)
		}
	}
}

// TestApplyRootfsStaysInside: the image's own symlinks (absolute, and
// through "..") cannot lead the diff's writes or deleted.files' removals
// out of the container's root.
func TestApplyRootfsStaysInside(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	rootfs := t.TempDir()
	os.Symlink(outside, filepath.Join(rootfs, "abs"))
	os.Symlink("../../../../../../../../"+outside, filepath.Join(rootfs, "rel"))
	for _, name := range []string{"abs", "rel"} {
		diff := tarOf(t, file(name+"/pwned", "x"), file(name+"/victim", "overwritten"))
		p := writeArchive(t, good(t, diff, `["/`+name+`/victim"]`)...)
		a, err := Open(p, DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		err = a.ApplyRootfs(rootfs)
		t.Logf("diff through the image's symlink %s: %v", name, err)
		if b, _ := os.ReadFile(victim); string(b) != "keep" {
			t.Errorf("through %s: %s changed to %q", name, victim, b)
		}
		if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
			t.Errorf("through %s: the diff wrote %s/pwned", name, outside)
		}
		// deleted.files alone.
		a.hasDiff = false
		a.ApplyRootfs(rootfs)
		if _, err := os.Stat(victim); err != nil {
			t.Errorf("through %s: deleted.files removed %s: %v", name, victim, err)
		}
	}
}

func TestOpenRefusesHostileArchives(t *testing.T) {
	bigCfg := strings.Repeat(" ", smallEntryMax+1)
	replace := func(name string, e entry) []entry {
		es := good(t, tarOf(t), `[]`)
		for i := range es {
			if es[i].hdr.Name == name {
				es[i] = e
			}
		}
		return es
	}
	without := func(name string) []entry {
		var es []entry
		for _, e := range good(t, tarOf(t), `[]`) {
			if e.hdr.Name != name {
				es = append(es, e)
			}
		}
		return es
	}
	withDiff := func(es ...entry) []entry { return good(t, tarOf(t, es...), `[]`) }
	for _, tc := range []struct {
		what    string
		entries []entry
		limits  Limits
		want    string
	}{
		{"absolute name", append(good(t, tarOf(t), `[]`), file("/etc/cron.d/x", "x")), DefaultLimits, "absolute name"},
		{"dot-dot name", append(good(t, tarOf(t), `[]`), file("../escape", "x")), DefaultLimits, "not a clean path"},
		{"dot-dot inside", append(good(t, tarOf(t), `[]`), file("checkpoint/../../x", "x")), DefaultLimits, "not a clean path"},
		{"symlink", append(good(t, tarOf(t), `[]`), entry{hdr: tar.Header{Name: "checkpoint/x", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}}), DefaultLimits, "is a symlink"},
		{"hard link", append(good(t, tarOf(t), `[]`), entry{hdr: tar.Header{Name: "checkpoint/x", Typeflag: tar.TypeLink, Linkname: "config.dump"}}), DefaultLimits, "is a hard link"},
		{"device", append(good(t, tarOf(t), `[]`), entry{hdr: tar.Header{Name: "checkpoint/x", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}}), DefaultLimits, "device node"},
		{"duplicate", append(good(t, tarOf(t), `[]`), file(ConfigDumpFile, "{}")), DefaultLimits, "appears twice"},
		{"no config.dump", without(ConfigDumpFile), DefaultLimits, "no config.dump"},
		{"no spec.dump", without(SpecDumpFile), DefaultLimits, "no spec.dump"},
		{"no images", without(ImagesDirectory + "/inventory.img"), DefaultLimits, "no CRIU images"},
		{"huge config.dump", replace(ConfigDumpFile, file(ConfigDumpFile, bigCfg)), DefaultLimits, "more than"},
		{"config.dump not JSON", replace(ConfigDumpFile, file(ConfigDumpFile, "nope")), DefaultLimits, "config.dump"},
		{"spec without process", replace(SpecDumpFile, file(SpecDumpFile, `{"ociVersion":"1.2.0"}`)), DefaultLimits, "has no process"},
		{"deleted root", replace(DeletedFilesFile, file(DeletedFilesFile, `["/"]`)), DefaultLimits, "not a file in the container"},
		{"deleted relative", replace(DeletedFilesFile, file(DeletedFilesFile, `["etc/passwd"]`)), DefaultLimits, "not a file in the container"},
		{"too large", good(t, tarOf(t), `[]`), Limits{Bytes: 100, Entries: 100}, "byte limit"},
		{"too many entries", good(t, tarOf(t), `[]`), Limits{Bytes: 1 << 20, Entries: 3}, "more than 3 entries"},
		{"diff dot-dot", withDiff(file("../../etc/cron.d/x", "x")), DefaultLimits, "rootfs-diff.tar: entry"},
		{"diff absolute", withDiff(file("/etc/cron.d/x", "x")), DefaultLimits, "absolute name"},
		{"diff hard link out", withDiff(entry{hdr: tar.Header{Name: "x", Typeflag: tar.TypeLink, Linkname: "../../../etc/shadow"}}), DefaultLimits, "outside the container's root"},
		{"diff device", withDiff(entry{hdr: tar.Header{Name: "dev/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}}), DefaultLimits, "device node"},
		{"diff not a tar", good(t, []byte(strings.Repeat("garbage!", 100)), `[]`), DefaultLimits, "rootfs-diff.tar: read tar"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			_, err := Open(writeArchive(t, tc.entries...), tc.limits)
			if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open = %v, want ErrInvalidArchive naming %q", err, tc.want)
			}
		})
	}
	_, err := Open(filepath.Join(t.TempDir(), "missing.tar"), DefaultLimits)
	if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing archive: %v", err)
	}
	if _, err := Open(t.TempDir(), DefaultLimits); !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, bytes.Repeat([]byte{0xff}, 2048), 0o600)
	if _, err := Open(junk, DefaultLimits); !errors.Is(err, ErrInvalidArchive) {
		t.Errorf("not a tar: %v", err)
	}
}

// TestWriteArchiveOpens: what CheckpointContainer writes, Open accepts.
func TestWriteArchiveOpens(t *testing.T) {
	upper := t.TempDir()
	os.MkdirAll(filepath.Join(upper, "tmp"), 0o1777)
	os.WriteFile(filepath.Join(upper, "tmp", "count"), []byte("42\n"), 0o644)
	images := t.TempDir()
	for _, n := range requiredImages {
		os.WriteFile(filepath.Join(images, n), []byte("x"), 0o600)
	}
	loc := filepath.Join(t.TempDir(), "a.tar")
	err := WriteArchive(loc, Contents{Config: Config{Name: "c"}, Spec: []byte(`{"process":{"args":["sh"]}}`), Images: images, Upper: upper})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(loc, DefaultLimits); err != nil {
		t.Fatalf("Open of WriteArchive's archive: %v", err)
	}
}

// TestOpenRefusesFIFO: an archive path that is a FIFO (no writer) is
// refused at once; opened blocking, the open waited for a writer forever.
func TestOpenRefusesFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "checkpoint.tar")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Open(p, DefaultLimits)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("Open(FIFO) = %v, want ErrInvalidArchive: not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock the stuck open so the test binary can end.
		if w, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("Open of a FIFO still blocked after 10 s")
	}
}

// TestOpenNeverOpensDevice: the archive path names a device node (a pod
// author's image string was a path like /dev/watchdog, whose open arms
// the watchdog): it must be refused without its driver ever being
// opened. inotify reports every open of the node, O_PATH ones excepted.
func TestOpenNeverOpensDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	p := filepath.Join(t.TempDir(), "watchdog")
	if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil { // /dev/null's numbers
		t.Fatal(err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, p, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, DefaultLimits); !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open(device) = %v, want ErrInvalidArchive: not a regular file", err)
	}
	buf := make([]byte, 4096)
	if n, _ := unix.Read(in, buf); n > 0 {
		t.Fatalf("Open opened the device node on the host (inotify IN_OPEN)")
	}
}

// TestOpenRefusesKernelFiles: /proc and /sys files are regular files to
// stat, not archives, and some have effects when read.
func TestOpenRefusesKernelFiles(t *testing.T) {
	for _, p := range []string{"/proc/self/status", "/proc/self/environ", "/sys/kernel/mm/transparent_hugepage/enabled"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if _, err := Open(p, DefaultLimits); !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "kernel filesystem") {
			t.Errorf("Open(%s) = %v, want ErrInvalidArchive: a file of a kernel filesystem", p, err)
		}
	}
	if _, err := Open(t.TempDir(), DefaultLimits); !errors.Is(err, ErrInvalidArchive) {
		t.Errorf("Open(directory) = %v, want ErrInvalidArchive", err)
	}
}

// TestArchiveSwappedAfterOpen: the file checked by Open is replaced (a
// rename over it) before the restore reads it again: the second read must
// refuse, not extract a file nobody checked.
func TestArchiveSwappedAfterOpen(t *testing.T) {
	p := writeArchive(t, good(t, tarOf(t, file("tmp/a", "a")), `[]`)...)
	a, err := Open(p, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	other := writeArchive(t, good(t, tarOf(t, file("tmp/b", "bb")), `[]`)...)
	if err := os.Rename(other, p); err != nil {
		t.Fatal(err)
	}
	if err := a.ExtractImages(t.TempDir()); !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("ExtractImages after a swap = %v, want ErrInvalidArchive: changed", err)
	}
}
