// Package helperbin holds the helper binaries the peapod binary carries
// (make build embeds them): the container runner (cmd/peapod-runner) and
// the static keeper (cmd/peapod-pause). The daemon seals each into a memfd
// once at start; every keeper, runner, container init and exec helper then
// runs from those pages, which nothing can write, and which all keepers
// share as they would share a file's page cache. Without embedded copies
// (a plain go build) the callers look beside the daemon's binary instead
// (runner.Exe, keeper.Exe).
package helperbin

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

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
// daemon keeps open for its lifetime. Once per helper: a second call keeps
// the first memfd, which keepers already run from.
func Load(name, data string) error {
	mu.Lock()
	defer mu.Unlock()
	if files[name] != nil {
		return nil
	}
	f, err := seal.Memfd(name, strings.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("embedded %s: %w", name, err)
	}
	files[name] = f
	return nil
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
