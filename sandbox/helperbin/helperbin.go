// Package helperbin holds the helper binaries the peapod binary carries
// (make build embeds them): the container runner (cmd/peapod-runner) and
// the static musl keeper (cmd/peapod-pause, C). The daemon seals each into a memfd
// once at start; every keeper, runner, container init and exec helper then
// runs from those pages, which nothing can write, and which all keepers
// share as they would share a file's page cache. Without embedded copies
// (a plain go build) the callers look beside the daemon's binary instead
// (runner.Exe, keeper.Exe).
package helperbin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/sandbox/seal"
)

// The helpers' names: their file names beside the daemon, their memfds'
// names (/proc/<pid>/exe of a process run from one reads
// "/memfd:<name> (deleted)").
const (
	Runner = "peapod-runner"
	Pause  = "peapod-pause"
)

var (
	mu    sync.Mutex
	files = map[string]*os.File{}
)

// Load seals data, the embedded copy of helper name, into a memfd that the
// daemon keeps open for its lifetime, or adopts the one the keepers of the
// daemon before a restart run from (adopt). Once per helper: a second call
// keeps the first memfd, which keepers already run from.
func Load(name, data string) error {
	mu.Lock()
	defer mu.Unlock()
	if files[name] != nil {
		return nil
	}
	if f := adopt(name, data); f != nil {
		files[name] = f
		return nil
	}
	f, err := seal.Memfd(name, strings.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("embedded %s: %w", name, err)
	}
	files[name] = f
	return nil
}

// adopt returns the memfd of helper name that a running process executes
// (a keeper of the daemon before a restart) when it holds exactly data and
// is sealed against writes: new keepers then share its pages with the old
// ones, and each restart does not leave one more copy in memory for as
// long as old pods live. Sealed (contents and exec bits), executable and
// equal, it is as good as a new one whoever made it. nil when there is
// none (or the kernel lacks F_SEAL_EXEC, before 6.3).
func adopt(name, data string) *os.File {
	want := "/memfd:" + name + " (deleted)"
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	seen := map[[2]uint64]bool{} // each memfd is read once, however many keepers run it
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		exe := "/proc/" + p.Name() + "/exe"
		if link, err := os.Readlink(exe); err != nil || link != want {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(exe, &st) != nil || seen[[2]uint64{st.Dev, st.Ino}] {
			continue
		}
		seen[[2]uint64{st.Dev, st.Ino}] = true
		f, err := os.Open(exe)
		if err != nil {
			continue
		}
		// Sealed, exec bits included, and executable: a process of a
		// container could have made it, but then cannot change it.
		if seal.IsSealed(f) && st.Mode&0o111 != 0 && sameContent(f, data) {
			return f
		}
		f.Close()
	}
	return nil
}

// sameContent reports whether f holds exactly data. It compares a chunk
// at a time: a buffer of the whole helper (11 MB) would grow the heap,
// and the heap goal after it, for one comparison at start.
func sameContent(f *os.File, data string) bool {
	st, err := f.Stat()
	if err != nil || st.Size() != int64(len(data)) {
		return false
	}
	buf := make([]byte, 64<<10)
	for off := 0; off < len(data); {
		n, err := f.ReadAt(buf[:min(len(buf), len(data)-off)], int64(off))
		if n == 0 || string(buf[:n]) != data[off:off+n] {
			return false
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return false
		}
		off += n
	}
	return true
}

// File is the sealed memfd of helper name, nil when it is not embedded.
func File(name string) *os.File {
	mu.Lock()
	defer mu.Unlock()
	return files[name]
}

// Path is the path any process of the host (a keeper, which the daemon
// did not necessarily start) executes helper name from: the daemon's fd
// of its memfd, "/proc/<daemon pid>/fd/<fd>"; "" when it is not embedded.
// Keepers run as root in the host's PID and user namespaces and may open
// it; a container cannot (other namespaces, no ptrace access to the
// daemon).
func Path(name string) string {
	f := File(name)
	if f == nil {
		return ""
	}
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(f.Fd()))
}
