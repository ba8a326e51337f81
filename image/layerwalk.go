package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// A container owns its writable layer and may fill it with anything while
// it is measured: millions of entries in one directory, millions of hard
// links, trees many thousands of levels deep, directories swapped for
// symlinks mid-walk. walkUsage measures it with memory and descriptors
// bounded whatever the layer holds (c/storage's directory.Usage reads each
// directory whole and remembers every inode; containerd's walk fails on
// paths longer than PATH_MAX):
//   - a directory is read in batches of walkBatch entries, never whole;
//   - only multiply-linked files are remembered, at most maxLinkedInodes
//     of them; past that a link is counted again (usage is overstated,
//     never hidden from the kubelet's ephemeral-storage eviction);
//   - every directory is opened relative to its parent's descriptor with
//     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so neither a symlink nor a
//     rename leads the walk out of the layer; at most fdWindow descriptors
//     are held (a chain of single subdirectories needs one), deeper ones
//     are opened from the deepest one held by their relative path, in
//     PATH_MAX-sized steps (quadratic in the depth of such a subtree: the
//     walk's deadline bounds it);
//   - the caller's context ends the walk (it runs with a deadline).
const (
	walkBatch       = 1024
	maxLinkedInodes = 1 << 20
	fdWindow        = 256
	pathStep        = 3072 // bytes of relative path opened at once, below PATH_MAX
)

// layerUsage is what walkUsage found.
type layerUsage struct {
	Bytes, Inodes uint64
	// linkedOverflow counts multiply-linked files counted without
	// remembering their inode, after maxLinkedInodes (tests read it).
	linkedOverflow uint64
	// maxFDs is the most directory descriptors held at once (tests read it).
	maxFDs int
}

// walkUsage sums the sizes of the non-directory entries below dir and counts
// its distinct inodes (dir itself included), like du --apparent-size --inodes.
func walkUsage(ctx context.Context, dir string) (layerUsage, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return layerUsage{}, fmt.Errorf("open %s: %w", dir, err)
	}
	w := &usageWalker{ctx: ctx, linked: map[uint64]struct{}{}}
	w.u.Inodes = 1
	err = w.dir(fd, -1, nil, true)
	return w.u, err
}

type usageWalker struct {
	ctx    context.Context
	linked map[uint64]struct{}
	u      layerUsage
	open   int // directory descriptors held now
}

var beneath = unix.OpenHow{
	Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
}

// dir counts the directory open at fd and everything below it, and closes
// fd. While fewer than fdWindow descriptors are held it keeps fd to open
// its children; otherwise they are opened from anchor by rel + name. Its
// last child is entered after fd is closed, so a chain of directories, however
// deep, holds one descriptor. force keeps fd whatever the count (a
// directory entered that way has no anchor).
func (w *usageWalker) dir(fd int, anchor int, rel []string, force bool) error {
	// The os.File owns fd from here: it is closed through it only.
	f := os.NewFile(uintptr(fd), "")
	w.open++
	w.u.maxFDs = max(w.u.maxFDs, w.open)
	held := true
	release := func() {
		if held {
			f.Close()
			w.open--
			held = false
		}
	}
	defer release()
	subdirs, err := w.readEntries(f, fd)
	if err != nil {
		return err
	}
	keep := force || w.open <= fdWindow
	if !keep {
		release()
	}
	for i, name := range subdirs {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		var child, childAnchor int
		var childRel []string
		if keep {
			child, err = unix.Openat2(fd, name, &beneath)
			childAnchor, childRel = fd, []string{name}
		} else {
			childRel = append(rel[:len(rel):len(rel)], name)
			child, err = openSteps(anchor, childRel)
			childAnchor = anchor
		}
		if err != nil {
			if vanished(err) {
				continue // changed meanwhile: the container is running
			}
			return fmt.Errorf("open a directory of the writable layer: %w", err)
		}
		childForce := false
		if keep && i == len(subdirs)-1 {
			release() // nothing left to open from fd
			childAnchor, childRel, childForce = -1, nil, true
		}
		if err := w.dir(child, childAnchor, childRel, childForce); err != nil {
			return err
		}
	}
	return nil
}

// readEntries counts the non-directory entries of the directory f (whose
// descriptor is fd) and returns its subdirectories' names.
func (w *usageWalker) readEntries(f *os.File, fd int) ([]string, error) {
	var subdirs []string
	for {
		if err := w.ctx.Err(); err != nil {
			return nil, err
		}
		names, err := f.Readdirnames(walkBatch)
		for _, name := range names {
			var st unix.Stat_t
			if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue // gone meanwhile
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				w.u.Inodes++
				subdirs = append(subdirs, name)
				continue
			}
			if st.Nlink > 1 {
				if _, seen := w.linked[st.Ino]; seen {
					continue
				}
				if len(w.linked) < maxLinkedInodes {
					w.linked[st.Ino] = struct{}{}
				} else {
					w.u.linkedOverflow++
				}
			}
			w.u.Inodes++
			w.u.Bytes += uint64(st.Size)
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			return subdirs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read a directory of the writable layer: %w", err)
		}
	}
}

// openSteps opens anchor/rel[0]/rel[1]/… beneath anchor, at most pathStep
// bytes of path per openat2.
func openSteps(anchor int, rel []string) (int, error) {
	cur := anchor
	for len(rel) > 0 {
		n, size := 0, 0
		for n < len(rel) && (n == 0 || size+len(rel[n])+1 <= pathStep) {
			size += len(rel[n]) + 1
			n++
		}
		next, err := unix.Openat2(cur, path.Join(rel[:n]...), &beneath)
		if cur != anchor {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur, rel = next, rel[n:]
	}
	return cur, nil
}

func vanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV)
}
