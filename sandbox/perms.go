package sandbox

import (
	"fmt"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"os"
	"path/filepath"
)

// stateDirs are the directories of the state and root directories with
// their modes (see above).
func stateDirs(root, state string) []struct {
	path string
	mode os.FileMode
} {
	return []struct {
		path string
		mode os.FileMode
	}{
		{root, hostfs.PrivateDirMode},
		{state, hostfs.PassDirMode},
		{filepath.Join(state, "pods"), hostfs.PrivateDirMode},
		{filepath.Join(state, "containers"), hostfs.PrivateDirMode},
		{filepath.Join(state, "k"), hostfs.PrivateDirMode},
		{libcontainerRoot(state), hostfs.PrivateDirMode},
		{hostfs.UsernsRootfsDir(state), hostfs.PassDirMode},
	}
}

// makeStateDirs creates peapod's directories, and tightens the modes an
// older peapod gave them. An older peapod bound user-namespaced containers'
// root filesystems at <state>/rootfs/<id>, open to every host user: that
// directory is closed (the containers there have resolved their path
// already; removeRootfs still unbinds them).
func makeStateDirs(root, state string) error {
	for _, d := range stateDirs(root, state) {
		if err := hostfs.EnsureDir(d.path, d.mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(hostfs.LegacyRootfsDir(state), hostfs.PrivateDirMode); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("close %s: %w", hostfs.LegacyRootfsDir(state), err)
	}
	return nil
}
