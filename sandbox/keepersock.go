package sandbox

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/peapod-cri/peapod/sandbox/proc"
	"golang.org/x/sys/unix"
)

// moveAsideNonDirs moves aside what stands where a state directory must be
// (a file, a symlink: a replaced directory), so that makeStateDirs can make
// it again instead of failing the start. A symlink is never followed: it
// could lead the keepers' sockets or the bundles elsewhere.
func moveAsideNonDirs(root, state string, log *slog.Logger) {
	for _, d := range stateDirs(root, state) {
		fi, err := os.Lstat(d.Path)
		if err != nil || fi.IsDir() {
			continue
		}
		aside := fmt.Sprintf("%s.unusable-%d", d.Path, time.Now().UnixNano())
		if err := os.Rename(d.Path, aside); err != nil {
			log.Warn("a state directory is not a directory and cannot be moved aside", "path", d.Path, "err", err)
			continue
		}
		log.Warn("a state directory was not a directory; moved aside and made again", "path", d.Path, "moved_to", aside, "mode", fi.Mode().String())
	}
}

// keeperRelistenTimeout bounds the wait for a keeper to bind its socket
// again.
const keeperRelistenTimeout = 5 * time.Second

// restoreKeeperSockets asks the keeper of every live pod whose socket is
// gone or replaced (its file removed, or the directory holding it) to bind
// it again (SIGUSR1: keeper.c relisten), so the daemon reaches the pod's
// logs, exits and attach again. What stood at the socket's path is in the
// daemon's private state directory and is removed first.
func (r *Runtime) restoreKeeperSockets() {
	for _, p := range r.pods {
		if p.Creating || !proc.Alive(p.PausePID, p.PauseStart) {
			continue
		}
		sock := keeperSocket(r.opts.State, p.ID)
		if fi, err := os.Lstat(sock); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			continue
		}
		if !relistens(p.PausePID) {
			r.log.Warn("the keeper's socket is gone and this keeper cannot bind it again (started by an older peapod); the pod must be recreated", "pod", p.ID, "socket", sock)
			continue
		}
		if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
			r.log.Warn("remove what replaced a keeper's socket", "pod", p.ID, "socket", sock, "err", err)
			continue
		}
		if err := unix.Kill(p.PausePID, unix.SIGUSR1); err != nil {
			r.log.Warn("ask the keeper to bind its socket again", "pod", p.ID, "err", err)
			continue
		}
		deadline := time.Now().Add(keeperRelistenTimeout)
		for {
			if fi, err := os.Lstat(sock); err == nil && fi.Mode()&fs.ModeSocket != 0 {
				r.log.Warn("a keeper's socket was gone or replaced; the keeper bound it again", "pod", p.ID, "socket", sock)
				break
			}
			if time.Now().After(deadline) {
				r.log.Warn("the keeper did not bind its socket again", "pod", p.ID, "socket", sock, "waited", keeperRelistenTimeout)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// relistens reports whether the keeper pid takes SIGUSR1 from its signalfd
// (blocked: keepers of this version) rather than dying of it (older ones).
func relistens(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(unix.SIGUSR1)-1)) != 0
		}
	}
	return false
}
