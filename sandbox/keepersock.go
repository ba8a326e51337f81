package sandbox

import (
	"errors"
	"time"

	"github.com/peapod-cri/peapod/sandbox/keeper"
	"github.com/peapod-cri/peapod/sandbox/proc"
)

// keeperRelistenTimeout bounds the wait for a keeper to bind its socket
// again.
const keeperRelistenTimeout = 5 * time.Second

// restoreKeeperSockets asks the keeper of every live pod whose socket is
// gone or replaced (its file removed, or the directory holding it) to bind
// it again, so the daemon reaches the pod's logs, exits and attach again.
func (r *Runtime) restoreKeeperSockets() {
	for _, p := range r.pods {
		if p.Creating || !proc.Alive(p.PausePID, p.PauseStart) {
			continue
		}
		sock := keeperSocket(r.opts.State, p.ID)
		if keeper.SocketLive(sock) {
			continue
		}
		switch err := keeper.Relisten(p.PausePID, sock, keeperRelistenTimeout); {
		case errors.Is(err, keeper.ErrCannotRelisten):
			r.log.Warn("the keeper's socket is gone and this keeper cannot bind it again (started by an older peapod); the pod must be recreated", "pod", p.ID, "socket", sock)
		case err != nil:
			r.log.Warn("the keeper's socket is gone and could not be bound again", "pod", p.ID, "socket", sock, "err", err)
		default:
			r.log.Warn("a keeper's socket was gone or replaced; the keeper bound it again", "pod", p.ID, "socket", sock)
		}
	}
}
