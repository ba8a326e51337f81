package sandbox

import (
	"path/filepath"

	"github.com/peapod-cri/peapod/sandbox/hostfs"
)

// stateDirs are peapod's directories with their modes (hostfs/perms.go).
func stateDirs(root, state string) []hostfs.StateDir {
	return hostfs.StateDirs(root, state, filepath.Join(state, "pods"), filepath.Join(state, "containers"),
		filepath.Join(state, "k"), libcontainerRoot(state))
}

func makeStateDirs(root, state string) error {
	return hostfs.MakeStateDirs(state, stateDirs(root, state))
}
