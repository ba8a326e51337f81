package oci

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Reading files out of a container's root filesystem. Its content comes
// from the image and is hostile: a FIFO would block the reader for ever, a
// device node would be opened on the host (with whatever its driver does
// on open), a symlink could point anywhere, a file could be endless. So a
// file is resolved inside the rootfs by handle (openat2 RESOLVE_IN_ROOT:
// absolute symlinks and ".." stay inside), opened first as O_PATH (no
// driver's open, no FIFO wait), checked to be a regular file, and only then
// reopened for reading, through the O_PATH handle, so the checked inode is
// the one read. Reads stop at a bound.

// maxUserDBBytes bounds /etc/passwd and /etc/group: the 10 MiB that
// moby/sys/user's GetExecUserPath allowed when peapod opened them by path,
// so no image that resolved before is refused now.
const maxUserDBBytes = 10 << 20

// errNotRegular says a rootfs file is not a regular file.
var errNotRegular = errors.New("not a regular file")

// openRootfsFile opens name (a path inside the container) for reading,
// resolved inside rootfs. A missing file gives an error that
// errors.Is(err, os.ErrNotExist); anything but a regular file gives
// errNotRegular. The reader fails once it has read more than limit bytes.
func openRootfsFile(rootfs, name string, limit int64) (io.ReadCloser, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem %s: %w", rootfs, err)
	}
	defer unix.Close(root)
	var fd int
	for {
		fd, err = unix.Openat2(root, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		})
		if err != unix.EINTR && err != unix.EAGAIN { // EAGAIN: a concurrent rename; retry
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &os.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", errNotRegular, fileKind(st.Mode))}
	}
	if st.Size > limit {
		return nil, &os.PathError{Op: "open", Path: name, Err: fmt.Errorf("file is %d bytes, more than the %d allowed", st.Size, limit)}
	}
	// Reopening the O_PATH handle through procfs opens exactly the inode
	// just checked. O_NONBLOCK and O_NOCTTY in case it is not one after all.
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "reopen", Path: name, Err: err}
	}
	return &boundedFile{f: f, name: name, left: limit}, nil
}

// boundedFile fails once more than its limit has been read: the file may
// grow after the size check.
type boundedFile struct {
	f    *os.File
	name string
	left int64
}

func (b *boundedFile) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a file at the limit from a longer one.
		var one [1]byte
		if n, _ := b.f.Read(one[:]); n > 0 {
			return 0, &os.PathError{Op: "read", Path: b.name, Err: errors.New("file grew past its size limit")}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.f.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedFile) Close() error { return b.f.Close() }

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symlink"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}
