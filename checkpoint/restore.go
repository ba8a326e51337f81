package checkpoint

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ErrInvalidArchive: the file named for a restore is not a checkpoint
// archive peapod accepts; the wrapping message says which entry and why.
var ErrInvalidArchive = errors.New("invalid checkpoint archive")

// Limits bound what an archive may make peapod read and write. The
// archive is input from whoever can call CreateContainer with a path, and
// its rootfs diff lands in a container's writable layer.
type Limits struct {
	// Bytes is the most the archive's entries may hold in all, the
	// memory images included.
	Bytes int64
	// Entries is the most entries the archive and its rootfs diff may
	// have, each.
	Entries int
}

// DefaultLimits: 16 GiB of contents (the memory of a container that
// large is no candidate for a restore on one node anyway) and 1,000,000
// entries.
var DefaultLimits = Limits{Bytes: 16 << 30, Entries: 1_000_000}

// smallEntryMax bounds what is read into memory: config.dump, spec.dump,
// deleted.files.
const smallEntryMax = 4 << 20

// CRIU's files a restore cannot go without: the inventory names the dump,
// descriptors.json (libcontainer's) the stdio to re-attach.
var requiredImages = []string{"inventory.img", "descriptors.json"}

// Archive is a checkpoint archive that passed Open's checks.
type Archive struct {
	Path    string
	Config  Config
	Spec    *specs.Spec
	Deleted []string // deleted.files: paths the container removed
	limits  Limits
	hasDiff bool
	stat    unix.Stat_t // the file checked, which later reads must find
}

// Open reads the archive at p (CRI-O's layout, as WriteArchive makes it)
// once through: every entry must be a regular file or directory under a
// clean relative name, the known small files within bounds, the rootfs
// diff's entries within the container's root, and CRIU's inventory
// present. Nothing is written. Errors wrap ErrInvalidArchive, except a
// failure to read the file.
func Open(p string, limits Limits) (*Archive, error) {
	f, st, err := openRegular(p, nil)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a := &Archive{Path: p, limits: limits, stat: *st}
	var cfg, spec, deleted []byte
	seen := map[string]bool{}
	err = walk(f, limits, func(name string, hdr *tar.Header, r io.Reader) error {
		if seen[name] {
			return fmt.Errorf("entry %q appears twice", name)
		}
		seen[name] = true
		var err error
		switch name {
		case ConfigDumpFile:
			cfg, err = readSmall(name, hdr, r)
		case SpecDumpFile:
			spec, err = readSmall(name, hdr, r)
		case DeletedFilesFile:
			deleted, err = readSmall(name, hdr, r)
		case RootfsDiffFile:
			a.hasDiff = true
			err = checkDiff(r, limits)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrInvalidArchive, p, err)
	}
	for _, need := range []string{ConfigDumpFile, SpecDumpFile} {
		if !seen[need] {
			return nil, fmt.Errorf("%w %s: no %s", ErrInvalidArchive, p, need)
		}
	}
	for _, img := range requiredImages {
		if !seen[ImagesDirectory+"/"+img] {
			return nil, fmt.Errorf("%w %s: no CRIU images (%s/%s missing)", ErrInvalidArchive, p, ImagesDirectory, img)
		}
	}
	if err := json.Unmarshal(cfg, &a.Config); err != nil {
		return nil, fmt.Errorf("%w %s: %s: %v", ErrInvalidArchive, p, ConfigDumpFile, err)
	}
	a.Spec = new(specs.Spec)
	if err := json.Unmarshal(spec, a.Spec); err != nil {
		return nil, fmt.Errorf("%w %s: %s: %v", ErrInvalidArchive, p, SpecDumpFile, err)
	}
	if a.Spec.Process == nil {
		return nil, fmt.Errorf("%w %s: %s has no process", ErrInvalidArchive, p, SpecDumpFile)
	}
	if deleted != nil {
		if err := json.Unmarshal(deleted, &a.Deleted); err != nil {
			return nil, fmt.Errorf("%w %s: %s: %v", ErrInvalidArchive, p, DeletedFilesFile, err)
		}
		for _, d := range a.Deleted {
			if !path.IsAbs(d) || path.Clean(d) == "/" || strings.ContainsRune(d, 0) {
				return nil, fmt.Errorf("%w %s: %s names %q, not a file in the container", ErrInvalidArchive, p, DeletedFilesFile, d)
			}
		}
	}
	return a, nil
}

// openRegular opens the archive at p for reading, refusing anything but a
// regular file of a disk filesystem before it is opened for reading: the
// path is resolved as O_PATH (no open of a device's driver, which can act
// on open — a watchdog arms, a tape rewinds — nor a FIFO's wait), checked
// with fstat and fstatfs, and only then reopened through that handle. The
// files of /proc, /sys and the other kernel filesystems are regular too,
// and not archives. want, when set, is the file Open checked: a second
// read must read the same one, not whatever was renamed there since.
func openRegular(p string, want *unix.Stat_t) (*os.File, *unix.Stat_t, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil, fmt.Errorf("%w %s: no such file", ErrInvalidArchive, p)
		}
		return nil, nil, fmt.Errorf("open checkpoint archive %s: %w", p, &os.PathError{Op: "open", Path: p, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, fmt.Errorf("open checkpoint archive %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, fmt.Errorf("%w %s: not a regular file", ErrInvalidArchive, p)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return nil, nil, fmt.Errorf("open checkpoint archive %s: %w", p, err)
	}
	if kernelFS[int64(fs.Type)] {
		return nil, nil, fmt.Errorf("%w %s: a file of a kernel filesystem (type %#x), not an archive", ErrInvalidArchive, p, fs.Type)
	}
	if want != nil && (st.Dev != want.Dev || st.Ino != want.Ino || st.Size != want.Size || st.Mtim != want.Mtim) {
		return nil, nil, fmt.Errorf("%w %s: the file changed since it was checked", ErrInvalidArchive, p)
	}
	// O_NONBLOCK still: the handle is a regular file, but cheap insurance.
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint archive %s: %w", p, err)
	}
	return f, &st, nil
}

// kernelFS are the filesystems whose regular files are the kernel's
// interfaces (reading some has effects, some never end), never archives.
var kernelFS = map[int64]bool{
	unix.PROC_SUPER_MAGIC: true, unix.SYSFS_MAGIC: true, unix.DEBUGFS_MAGIC: true, unix.TRACEFS_MAGIC: true,
	unix.SECURITYFS_MAGIC: true, unix.CGROUP_SUPER_MAGIC: true, unix.CGROUP2_SUPER_MAGIC: true,
	unix.BPF_FS_MAGIC: true, 0x62656570 /* configfs */ : true, unix.EFIVARFS_MAGIC: true, unix.PSTOREFS_MAGIC: true,
	unix.SELINUX_MAGIC: true, unix.SMACK_MAGIC: true, unix.DEVPTS_SUPER_MAGIC: true, unix.NSFS_MAGIC: true,
}

// walk calls fn for each entry of the tar in r, with its checked name
// ("./" and a trailing "/" dropped). Only regular files and directories
// pass; the sizes and the count are bounded by limits.
func walk(r io.Reader, limits Limits, fn func(name string, hdr *tar.Header, r io.Reader) error) error {
	return walkTar(r, limits, "", func(hdr *tar.Header) error {
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir:
			return nil
		}
		return fmt.Errorf("entry %q is a %s; a checkpoint archive holds only files and directories", hdr.Name, typeName(hdr.Typeflag))
	}, fn)
}

// walkTar is the loop of walk and diffEntries: each entry's name checked,
// its type by checkType, the count and sizes bounded by limits; the
// errors of the loop (not fn's) name where, when it is not empty.
func walkTar(r io.Reader, limits Limits, where string, checkType func(*tar.Header) error, fn func(name string, hdr *tar.Header, r io.Reader) error) error {
	at := func(err error) error {
		if where == "" {
			return err
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	tr := tar.NewReader(r)
	var total int64
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return at(fmt.Errorf("read tar: %w", err))
		}
		if n >= limits.Entries {
			return at(fmt.Errorf("more than %d entries", limits.Entries))
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return at(err)
		}
		if err := checkType(hdr); err != nil {
			return at(err)
		}
		if hdr.Size < 0 || hdr.Size > limits.Bytes-total {
			return at(fmt.Errorf("entry %q: contents exceed the %d-byte limit", hdr.Name, limits.Bytes))
		}
		total += hdr.Size
		if name == "" {
			continue // "./" itself
		}
		if err := fn(name, hdr, tr); err != nil {
			return err
		}
	}
}

// cleanName is an entry's name relative to the archive's root, or an error
// when it is absolute, climbs out with "..", or is not clean.
func cleanName(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if n == "" || n == "." {
		return "", nil
	}
	if strings.HasPrefix(n, "/") || strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("entry %q has an absolute name", name)
	}
	if path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../") || strings.Contains(n, "/../") {
		return "", fmt.Errorf("entry %q: the name is not a clean path inside the archive", name)
	}
	return n, nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "device node"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

func readSmall(name string, hdr *tar.Header, r io.Reader) ([]byte, error) {
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if hdr.Size > smallEntryMax {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", name, hdr.Size, smallEntryMax)
	}
	b, err := io.ReadAll(io.LimitReader(r, smallEntryMax))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

// checkDiff reads the rootfs diff's headers: names inside the root, hard
// links to names inside it, no device nodes (a container's writable layer
// gets none from an archive), bounded. The contents are checked again as
// they are written (ApplyRootfs).
func checkDiff(r io.Reader, limits Limits) error {
	return diffEntries(r, limits, func(string, *tar.Header, io.Reader) error { return nil })
}

// diffEntries walks the rootfs diff, where symlinks and hard links may
// appear (the container's own files).
func diffEntries(r io.Reader, limits Limits, fn func(name string, hdr *tar.Header, r io.Reader) error) error {
	return walkTar(r, limits, RootfsDiffFile, func(hdr *tar.Header) error {
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
			return nil
		case tar.TypeLink:
			if _, err := cleanName(hdr.Linkname); err != nil || hdr.Linkname == "" {
				return fmt.Errorf("hard link %q points at %q, outside the container's root", hdr.Name, hdr.Linkname)
			}
			return nil
		}
		return fmt.Errorf("entry %q is a %s, which a restore does not create", hdr.Name, typeName(hdr.Typeflag))
	}, fn)
}

// reopen walks the archive again for the entries fn wants.
func (a *Archive) reopen(fn func(name string, hdr *tar.Header, r io.Reader) error) error {
	f, _, err := openRegular(a.Path, &a.stat)
	if err != nil {
		return err
	}
	defer f.Close()
	err = walk(f, a.limits, func(name string, hdr *tar.Header, r io.Reader) error {
		if err := fn(name, hdr, r); err != nil {
			return writeError{err}
		}
		return nil
	})
	var we writeError
	if errors.As(err, &we) {
		// Writing failed (a full disk, the diff not fitting the image's
		// tree): the node's or the image's problem, not the archive's.
		return fmt.Errorf("checkpoint archive %s: %w", a.Path, we.err)
	}
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrInvalidArchive, a.Path, err)
	}
	return nil
}

// writeError marks a failure of reopen's fn, apart from the archive's.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

// ExtractImages writes the archive's CRIU images into dir, a directory
// the caller just made and nobody else writes: files 0600, directories
// 0700, whatever modes the archive claims.
func (a *Archive) ExtractImages(dir string) error {
	root, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("CRIU images directory: %w", err)
	}
	defer root.Close()
	x := &extractor{root: root}
	return a.reopen(func(name string, hdr *tar.Header, r io.Reader) error {
		rel, ok := strings.CutPrefix(name, ImagesDirectory+"/")
		if !ok {
			return nil
		}
		h := *hdr
		h.Uid, h.Gid = 0, 0
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o700
		} else {
			h.Mode = 0o600
		}
		return x.entry(rel, &h, r)
	})
}

// ApplyRootfs writes the rootfs diff into the container's mounted root
// filesystem, then removes the files deleted.files names, as CRI-O
// restores a container's changes. Every path is resolved inside rootfs
// (openat2 RESOLVE_IN_ROOT, no crossing of mount points): the image's own
// symlinks cannot lead a write out of it.
func (a *Archive) ApplyRootfs(rootfs string) error {
	root, err := os.Open(rootfs)
	if err != nil {
		return fmt.Errorf("open root filesystem: %w", err)
	}
	defer root.Close()
	x := &extractor{root: root, owners: true}
	if a.hasDiff {
		err := a.reopen(func(name string, hdr *tar.Header, r io.Reader) error {
			if name != RootfsDiffFile {
				return nil
			}
			err := diffEntries(r, a.limits, func(name string, hdr *tar.Header, r io.Reader) error {
				if err := x.entry(name, hdr, r); err != nil {
					return writeError{err}
				}
				return nil
			})
			var we writeError
			if err != nil && !errors.As(err, &we) {
				return fmt.Errorf("%w: %w", ErrInvalidArchive, err)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	for _, d := range a.Deleted {
		if err := x.remove(strings.TrimPrefix(path.Clean(d), "/")); err != nil {
			return fmt.Errorf("remove %s (%s): %w", d, DeletedFilesFile, err)
		}
	}
	return nil
}

// IsArchivePath tells a CreateContainer image that names a checkpoint
// archive, as CRI-O takes one: an absolute path (no image reference
// starts with "/").
func IsArchivePath(image string) bool { return strings.HasPrefix(image, "/") }
