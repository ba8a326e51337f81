// Package exec runs processes in running containers and streams to them:
// Exec through the C helper (sandbox/enter) or libcontainer's setns init,
// Attach to the stdio the pod's keeper holds, PortForward into the pod's
// network namespace. The lifecycle (package sandbox) finds the container,
// checks its state and calls one of the Executor's methods; this package
// knows nothing of pods, containers' states or the metadata store.
package exec

import (
	"errors"
	"log/slog"
	"syscall"
)

// Executor holds what every exec shares: libcontainer's root and the
// sealed exec helper, made on the first exec.
type Executor struct {
	root       string // libcontainer's state root
	sealDir    string // an empty directory for the helper's overlayfs seal
	log        *slog.Logger
	execHelper execHelper
}

// New returns the Executor of containers under libcontainer root lcRoot;
// sealDir is the empty directory the helper's seal needs.
func New(lcRoot, sealDir string, log *slog.Logger) *Executor {
	return &Executor{root: lcRoot, sealDir: sealDir, log: log}
}

// ErrBadCommand says a command cannot be run as given (an argument with a
// NUL). The CRI layer refuses such commands first.
var ErrBadCommand = errors.New("bad command")

// exitCode turns a wait status into the shell convention kubelet shows.
func exitCode(ws syscall.WaitStatus) int32 {
	if ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(ws.ExitStatus())
}
