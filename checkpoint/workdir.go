package checkpoint

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// WorkDirPrefix names the directories a checkpoint works in, beside its
// archive: CRIU's images and log, the rootfs diff and the archive's
// temporary copy all go into one, so one name finds all of them.
const WorkDirPrefix = ".peapod-checkpoint-"

// WorkDir is a checkpoint's private directory beside its archive, locked
// (flock) for as long as the checkpoint runs: a lock nobody holds marks
// one a crashed daemon left, which the next checkpoint in that directory
// (or the daemon's start, SweepWorkDirs) removes. The lock dies with the
// process, so no record has to survive the crash.
type WorkDir struct {
	Path string
	lock *os.File
}

// NewWorkDir sweeps dir's abandoned work directories, then makes and
// locks a new one there.
func NewWorkDir(dir string) (*WorkDir, error) {
	SweepWorkDirs(dir)
	p, err := os.MkdirTemp(dir, WorkDirPrefix)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(p)
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return &WorkDir{Path: p, lock: f}, nil
}

// Remove deletes the work directory and its contents, then drops the lock.
func (w *WorkDir) Remove() {
	os.RemoveAll(w.Path)
	w.lock.Close()
}

// SweepWorkDirs removes dir's work directories no live checkpoint holds
// and returns how many; errors are for the next sweep to meet again.
func SweepWorkDirs(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), WorkDirPrefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		// Held (EWOULDBLOCK): a checkpoint runs. Not lockable at all
		// (some network filesystems): left, as nothing tells.
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil && os.RemoveAll(p) == nil {
			n++
		}
		unix.Close(fd)
	}
	return n
}
