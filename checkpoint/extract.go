package checkpoint

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// extractor writes tar entries beneath root by handle: each entry's parent
// is opened with openat2 RESOLVE_IN_ROOT (a symlink, even an absolute one
// or "..", resolves inside root), never across a mount point, and the
// entry itself is made with the *at calls on that handle without
// following a symlink in its last component.
type extractor struct {
	root *os.File
	// owners: keep the entries' owners, modes and times (a rootfs diff);
	// else they are root's.
	owners bool
}

const resolveInRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openIn opens name (relative, clean) inside root as a directory handle.
func (x *extractor) openIn(name string, flags uint64) (int, error) {
	if name == "" {
		name = "."
	}
	for {
		fd, err := unix.Openat2(int(x.root.Fd()), name, &unix.OpenHow{
			Flags:   flags | unix.O_CLOEXEC,
			Resolve: resolveInRoot,
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: name, Err: err}
		}
		return fd, nil
	}
}

// mkdirAll makes dir and its missing parents inside root and returns a
// handle on it.
func (x *extractor) mkdirAll(dir string) (int, error) {
	fd, err := x.openIn(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, base := path.Split(dir)
	pfd, err := x.mkdirAll(strings.TrimSuffix(parent, "/"))
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil && err != unix.EEXIST {
		return -1, &os.PathError{Op: "mkdirat", Path: dir, Err: err}
	}
	return x.openIn(dir, unix.O_PATH|unix.O_DIRECTORY)
}

// entry makes one tar entry, name relative and clean.
func (x *extractor) entry(name string, hdr *tar.Header, r io.Reader) error {
	parent, base := path.Split(name)
	dfd, err := x.mkdirAll(strings.TrimSuffix(parent, "/"))
	if err != nil {
		return fmt.Errorf("entry %q: %w", name, err)
	}
	defer unix.Close(dfd)
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(dfd, base, 0o700); err != nil && err != unix.EEXIST {
			return fmt.Errorf("entry %q: mkdir: %w", name, err)
		}
		fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("entry %q: open directory: %w", name, err)
		}
		defer unix.Close(fd)
		return x.attrs(fd, name, hdr, mode)
	case tar.TypeReg:
		if err := removeAt(dfd, base); err != nil {
			return fmt.Errorf("entry %q: replace: %w", name, err)
		}
		fd, err := unix.Openat(dfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("entry %q: create: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		n, err := io.Copy(f, io.LimitReader(r, hdr.Size))
		if err != nil {
			return fmt.Errorf("entry %q: write: %w", name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("entry %q: %d of %d bytes in the archive", name, n, hdr.Size)
		}
		return x.attrs(fd, name, hdr, mode)
	case tar.TypeSymlink:
		if err := removeAt(dfd, base); err != nil {
			return fmt.Errorf("entry %q: replace: %w", name, err)
		}
		if err := unix.Symlinkat(hdr.Linkname, dfd, base); err != nil {
			return fmt.Errorf("entry %q: symlink: %w", name, err)
		}
		if x.owners {
			if err := unix.Fchownat(dfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("entry %q: chown: %w", name, err)
			}
		}
		return nil
	case tar.TypeLink:
		sparent, sbase := path.Split(hdr.Linkname)
		sfd, err := x.openIn(strings.TrimSuffix(sparent, "/"), unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("entry %q: link target: %w", name, err)
		}
		defer unix.Close(sfd)
		if err := removeAt(dfd, base); err != nil {
			return fmt.Errorf("entry %q: replace: %w", name, err)
		}
		if err := unix.Linkat(sfd, sbase, dfd, base, 0); err != nil {
			return fmt.Errorf("entry %q: hard link to %q: %w", name, hdr.Linkname, err)
		}
		return nil
	}
	return fmt.Errorf("entry %q: a %s", name, typeName(hdr.Typeflag))
}

// attrs sets the owner, then the mode (chown clears set-ID bits), then
// the modification time of the open entry fd.
func (x *extractor) attrs(fd int, name string, hdr *tar.Header, mode uint32) error {
	if x.owners {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("entry %q: chown: %w", name, err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("entry %q: chmod: %w", name, err)
	}
	if x.owners && !hdr.ModTime.IsZero() {
		ts := []unix.Timespec{unix.NsecToTimespec(hdr.AccessTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		if hdr.AccessTime.IsZero() {
			ts[0] = ts[1]
		}
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("entry %q: times: %w", name, err)
		}
	}
	return nil
}

// remove deletes name (relative) inside root, a directory with its
// contents; a name already gone is no error.
func (x *extractor) remove(name string) error {
	parent, base := path.Split(name)
	dfd, err := x.openIn(strings.TrimSuffix(parent, "/"), unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return removeAt(dfd, base)
}

// removeAt removes base in the directory dfd, recursively, without
// following symlinks; absent is fine.
func removeAt(dfd int, base string) error {
	err := unix.Unlinkat(dfd, base, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), base)
	names, err := d.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	d.Close()
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dfd, base, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}
