package checkpoint

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The archive's entries, as CRI-O and containerd write them and
// checkpointctl reads them, so a checkpoint from peapod can be inspected
// (checkpointctl show) and restored by either.
const (
	ConfigDumpFile   = "config.dump"     // Config as JSON
	SpecDumpFile     = "spec.dump"       // the container's OCI runtime spec
	ImagesDirectory  = "checkpoint"      // CRIU's images
	RootfsDiffFile   = "rootfs-diff.tar" // files the container wrote or changed
	DeletedFilesFile = "deleted.files"   // JSON list of image files it removed
)

// Config is config.dump: checkpointctl's metadata.ContainerConfig.
type Config struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	RootfsImage     string    `json:"rootfsImage,omitempty"`
	RootfsImageRef  string    `json:"rootfsImageRef,omitempty"`
	RootfsImageName string    `json:"rootfsImageName,omitempty"`
	OCIRuntime      string    `json:"runtime,omitempty"`
	CreatedTime     time.Time `json:"createdTime"`
	CheckpointedAt  time.Time `json:"checkpointedTime"`
	RestoredAt      time.Time `json:"restoredTime"`
	Restored        bool      `json:"restored"`
}

// Contents is what goes into one container's archive.
type Contents struct {
	Config Config
	Spec   []byte // config.json of the container's bundle
	// Images is the directory CRIU dumped into.
	Images string
	// Upper is the overlay upper directory of the container's rootfs:
	// its files make rootfs-diff.tar, its whiteouts deleted.files.
	Upper string
	// TempDir holds the temporary files (the archive before its rename,
	// the rootfs diff), on location's filesystem; "": beside location.
	TempDir string
}

// WriteArchive writes the uncompressed tar the kubelet asked for at
// location, readable by root only (it holds the processes' memory), whole
// or not at all: a temporary file beside it, synced, then renamed.
func WriteArchive(location string, c Contents) (err error) {
	tmpDir := c.TempDir
	if tmpDir == "" {
		tmpDir = filepath.Dir(location)
	}
	tmp, err := os.CreateTemp(tmpDir, "."+filepath.Base(location)+".tmp-")
	if err != nil {
		return fmt.Errorf("create checkpoint archive: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	sp, err := spaceAt(filepath.Dir(location))
	if err != nil {
		return err
	}
	diff, deleted, err := rootfsDiff(c.Upper, tmpDir, sp)
	if err != nil {
		return err
	}
	defer os.Remove(diff)

	tw := tar.NewWriter(tmp)
	cfg, err := json.Marshal(c.Config)
	if err != nil {
		return err
	}
	del, err := json.Marshal(deleted)
	if err != nil {
		return err
	}
	if err := sp.take(int64(len(del)+len(cfg)+len(c.Spec)), 1); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{ConfigDumpFile, cfg}, {SpecDumpFile, c.Spec}, {DeletedFilesFile, del}} {
		if err := addBytes(tw, f.name, f.data); err != nil {
			return err
		}
	}
	if err := addFile(tw, RootfsDiffFile, diff); err != nil {
		return err
	}
	if err := (&treeWriter{tw: tw, space: sp, copies: 1}).add(c.Images, ImagesDirectory); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint archive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	if err := os.Rename(tmp.Name(), location); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	return nil
}

func addBytes(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	return nil
}

func addFile(tw *tar.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	return nil
}

// ErrNoSpace: the archive would leave the filesystem of its location
// with less than a tenth of it free.
var ErrNoSpace = errors.New("not enough free space for the checkpoint archive")

// space is what an archive may still write on its filesystem: what is
// available less a tenth of the filesystem, the kubelet's default hard
// eviction threshold for nodefs (nodefs.available<10%), so that a
// checkpoint never pushes the node into evicting pods. The writable layer
// is the container's, and its apparent size is not what it costs on disk:
// a sparse file of a terabyte holds no block until it is archived.
type space struct {
	left     int64
	reserved int64
	dir      string
}

func spaceAt(dir string) (*space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, fmt.Errorf("checkpoint archive: free space of %s: %w", dir, err)
	}
	bsize := int64(st.Bsize)
	reserved := int64(st.Blocks) * bsize / 10
	return &space{left: int64(st.Bavail)*bsize - reserved, reserved: reserved, dir: dir}, nil
}

// take charges n bytes written copies times; nil space is unbounded.
func (s *space) take(n, copies int64) error {
	if s == nil {
		return nil
	}
	// tar pads every file to its 512-byte block.
	s.left -= (n + tarBlock - 1) / tarBlock * tarBlock * copies
	if s.left < 0 {
		return fmt.Errorf("%w: %s would keep less than %d MiB (a tenth of its filesystem) free", ErrNoSpace, s.dir, s.reserved>>20)
	}
	return nil
}

const tarBlock = 512

// treeWriter writes a directory tree into a tar.
type treeWriter struct {
	tw       *tar.Writer
	whiteout func(path string) // given each whiteout, not archived; nil: none expected
	space    *space
	copies   int64 // how often each byte is written: 2 for the diff (its temporary tar, then the archive)
}

// maxDepth bounds how deep a treeWriter descends: it holds a descriptor per
// level, and the tree may be the container's (its writable layer).
const maxDepth = 1024

// add adds dir's entries under prefix, keeping their modes, owners and
// link targets (a rootfs diff needs all three); sockets, FIFOs and device
// nodes are skipped, as CRI-O's archiver does. A whiteout (overlayfs's 0:0
// character device) is not archived but passed to whiteout, when set, with
// its path below dir.
//
// The tree may be a running container's writable layer, which it can
// change while it is read: every entry is opened by handle, one name at a
// time from its parent's descriptor and never following a symlink
// (O_PATH|O_NOFOLLOW), checked with fstat, and only a regular file is
// then opened for reading, through that handle. A directory or file the
// container swaps for a symlink is archived as that symlink or not at all;
// nothing outside dir is read and no FIFO or device node is opened.
func (w *treeWriter) add(dir, prefix string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("checkpoint archive: open %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	defer d.Close()
	if prefix != "" {
		fi, err := d.Stat()
		if err != nil {
			return fmt.Errorf("checkpoint archive: %w", err)
		}
		if err := w.header(fi, prefix, ""); err != nil {
			return err
		}
	}
	return w.addDir(d, prefix, "", 1)
}

// addDir adds the entries of the open directory d; name is d's name in
// the archive, rel its path below the tree's root.
func (w *treeWriter) addDir(d *os.File, name, rel string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("checkpoint archive: %s is more than %d directories deep", rel, maxDepth)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("checkpoint archive: read %s: %w", d.Name(), err)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := w.addEntry(d, path.Join(name, n), path.Join(rel, n), n, depth); err != nil {
			return err
		}
	}
	return nil
}

func (w *treeWriter) addEntry(parent *os.File, name, rel, base string, depth int) error {
	fd, err := unix.Openat(int(parent.Fd()), base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil // removed since the directory was read
	}
	if err != nil {
		return fmt.Errorf("checkpoint archive: open %s: %w", rel, err)
	}
	h := os.NewFile(uintptr(fd), rel)
	defer h.Close()
	fi, err := h.Stat()
	if err != nil {
		return fmt.Errorf("checkpoint archive: %s: %w", rel, err)
	}
	switch mode := fi.Mode(); {
	case mode.IsDir():
		// "." from the handle is the same directory, whatever the
		// name points to by now.
		dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("checkpoint archive: open %s: %w", rel, err)
		}
		d := os.NewFile(uintptr(dfd), rel)
		defer d.Close()
		if err := w.header(fi, name, ""); err != nil {
			return err
		}
		return w.addDir(d, name, rel, depth+1)
	case mode&fs.ModeSymlink != 0:
		link, err := readlinkHandle(fd)
		if err != nil {
			return fmt.Errorf("checkpoint archive: %s: %w", rel, err)
		}
		return w.header(fi, name, link)
	case mode.IsRegular():
		// Reopened through the handle: the inode fstat saw, which is
		// a regular file.
		f, err := os.Open("/proc/self/fd/" + strconv.Itoa(fd))
		if err != nil {
			return fmt.Errorf("checkpoint archive: open %s: %w", rel, err)
		}
		defer f.Close()
		// Charged at the size fstat reports, not the blocks the file
		// holds: a sparse file is written out whole.
		if err := w.space.take(fi.Size(), w.copies); err != nil {
			return fmt.Errorf("%s (%d bytes): %w", rel, fi.Size(), err)
		}
		if err := w.header(fi, name, ""); err != nil {
			return err
		}
		// The header's size is fstat's; a file the container grows or
		// truncates meanwhile fails its own checkpoint.
		n, err := io.Copy(w.tw, io.LimitReader(f, fi.Size()))
		if err == nil && n < fi.Size() {
			err = fmt.Errorf("truncated while archived (%d of %d bytes)", n, fi.Size())
		}
		if err != nil {
			return fmt.Errorf("checkpoint archive %s: %w", name, err)
		}
		return nil
	case mode&fs.ModeCharDevice != 0 && w.whiteout != nil:
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
			w.whiteout("/" + rel)
		}
	}
	return nil
}

func (w *treeWriter) header(fi fs.FileInfo, name, link string) error {
	if err := w.space.take(tarBlock, w.copies); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	return nil
}

// readlinkHandle reads the target of the symlink opened O_PATH|O_NOFOLLOW
// as fd (readlinkat with an empty name).
func readlinkHandle(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// rootfsDiff writes the upper directory's files, but not its whiteouts,
// into a temporary tar in tmpDir, and returns it with the whiteouts' paths
// (overlayfs marks a removed file with a 0:0 character device). "" upper:
// an empty diff.
func rootfsDiff(upper, tmpDir string, sp *space) (path string, deleted []string, err error) {
	f, err := os.CreateTemp(tmpDir, ".rootfs-diff-")
	if err != nil {
		return "", nil, fmt.Errorf("rootfs diff: %w", err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	deleted = []string{}
	tw := tar.NewWriter(f)
	if upper != "" {
		// Written twice: the temporary tar, then its copy in the archive.
		w := &treeWriter{tw: tw, space: sp, copies: 2, whiteout: func(p string) { deleted = append(deleted, p) }}
		if err = w.add(upper, ""); err != nil {
			return "", nil, fmt.Errorf("rootfs diff of %s: %w", upper, err)
		}
	}
	if err = tw.Close(); err != nil {
		return "", nil, fmt.Errorf("rootfs diff: %w", err)
	}
	return f.Name(), deleted, nil
}

// UpperDir finds the overlay upper directory of the mount at rootfs in
// /proc/self/mountinfo; ("", nil) when rootfs is not an overlay mount.
func UpperDir(rootfs string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	upper := ""
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || f[4] != rootfs {
			continue
		}
		g := strings.Fields(post)
		if len(g) < 3 || g[0] != "overlay" {
			upper = "" // the last mount at rootfs is the visible one
			continue
		}
		upper = ""
		for _, opt := range strings.Split(g[2], ",") {
			if v, ok := strings.CutPrefix(opt, "upperdir="); ok {
				upper = v
			}
		}
	}
	if upper == "" {
		return "", nil
	}
	if _, err := os.Stat(upper); err != nil {
		return "", errors.Join(fmt.Errorf("upper directory of %s", rootfs), err)
	}
	return upper, nil
}
