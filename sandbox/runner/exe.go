package runner

import (
	"os"
	"path/filepath"
	"strings"
)

// Binary is the name of the small runner binary (cmd/peapod-runner) that
// the daemon uses when it is installed beside it.
const Binary = "peapod-runner"

// Exe is what the keeper executes to start a container: the small
// runner binary beside the daemon's, else the daemon's own (both run
// package runner; the small one starts in a third of the time). Always a
// path on disk, never the keeper's /proc/self/exe: a keeper started by an
// older peapod must run the runner of the daemon that asks it, whose
// arguments it understands.
func Exe() string {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		exe = ""
	}
	if exe == "" || strings.HasSuffix(exe, " (deleted)") {
		return "/proc/self/exe"
	}
	p := filepath.Join(filepath.Dir(exe), Binary)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p
	}
	return exe
}
