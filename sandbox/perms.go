package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
)

// Who may reach what peapod keeps on the host. Host users other than root
// are hostile, and the IDs in peapod's paths are no secret (a container's ID
// is in every one of its processes' /proc/PID/cgroup, a pod's in its
// keeper's command line), so the modes alone keep them out:
//
//   - every directory is root's and 0700 (privateDirMode), except
//   - the state directory and the parent of the user-namespaced containers'
//     root filesystems, 0711 (passDirMode): runc resolves such a container's
//     root filesystem path from inside its user namespace, where the host's
//     root-owned directories only let it through as "other". Nothing in
//     them is named for other users to reach: each entry is 0700, or
//   - 0710 with the group of the pod's mapped root (mappedDirMode) for the
//     directory that holds one user-namespaced container's root filesystem,
//     as containerd does since CVE-2024-25621.
//
// Pod files (hostname, resolv.conf, /dev/shm) need no such way through:
// runc has the host side open the source of a bind mount its init cannot
// reach from the user namespace.
const (
	privateDirMode = 0o700
	passDirMode    = 0o711
	mappedDirMode  = 0o710
)

// ensureDir creates dir (and its missing parents) and gives it mode, also
// when it existed with a looser one (an older peapod made them 0711).
func ensureDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// MkdirAll leaves an existing directory alone and the umask may have
	// taken bits from a new one.
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("set the mode of %s: %w", dir, err)
	}
	return nil
}

// ensureMappedDir makes dir root's, 0710, with group gid: only the
// processes of the user namespace whose root is gid pass through.
func ensureMappedDir(dir string, gid int) error {
	if err := os.Mkdir(dir, privateDirMode); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Group first, mode second: the directory is never open to gid before
	// it is root's.
	if err := os.Lchown(dir, 0, gid); err != nil {
		return fmt.Errorf("give %s to group %d: %w", dir, gid, err)
	}
	if err := os.Chmod(dir, mappedDirMode); err != nil {
		return fmt.Errorf("set the mode of %s: %w", dir, err)
	}
	return nil
}

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
		{root, privateDirMode},
		{state, passDirMode},
		{filepath.Join(state, "pods"), privateDirMode},
		{filepath.Join(state, "containers"), privateDirMode},
		{filepath.Join(state, "k"), privateDirMode},
		{libcontainerRoot(state), privateDirMode},
		{usernsRootfsDir(state), passDirMode},
	}
}

// makeStateDirs creates peapod's directories, and tightens the modes an
// older peapod gave them. An older peapod bound user-namespaced containers'
// root filesystems at <state>/rootfs/<id>, open to every host user: that
// directory is closed (the containers there have resolved their path
// already; removeRootfs still unbinds them).
func makeStateDirs(root, state string) error {
	for _, d := range stateDirs(root, state) {
		if err := ensureDir(d.path, d.mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(legacyRootfsDir(state), privateDirMode); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("close %s: %w", legacyRootfsDir(state), err)
	}
	return nil
}
