package runner

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/peapod-cri/peapod/sandbox/helperbin"
)

// Binary is the name of the small runner binary (cmd/peapod-runner) that
// the daemon uses when it is installed beside it.
const Binary = helperbin.Runner

// Exe is what the keeper executes to start a container: the runner the
// peapod binary embeds (the daemon's sealed memfd of it), else the small
// runner binary beside the daemon's, else the daemon's own (all run
// package runner; the small one starts in a third of the time). Never the
// keeper's /proc/self/exe: a keeper started by an older peapod must run
// the runner of the daemon that asks it, whose arguments it understands.
func Exe() string {
	if p := helperbin.Path(helperbin.Runner); p != "" {
		return p
	}
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
