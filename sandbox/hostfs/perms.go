// Package hostfs owns what peapod makes on the host's filesystem beside
// the image store: who may reach its directories (the modes below), the
// bind of a user-namespaced container's root filesystem and its paths,
// the image's volumes inside a root filesystem, ownership for a pod's user
// namespace, and the probe of idmapped mounts. It knows nothing of the
// runtime's state; package sandbox decides when each is done.
package hostfs

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Who may reach what peapod keeps on the host. Host users other than root
// are hostile, and the IDs in peapod's paths are no secret (a container's ID
// is in every one of its processes' /proc/PID/cgroup, a pod's in its
// keeper's command line), so the modes alone keep them out:
//
//   - every directory is root's and 0700 (PrivateDirMode), except
//   - the state directory and the parent of the user-namespaced containers'
//     root filesystems, 0711 (PassDirMode): runc resolves such a container's
//     root filesystem path from inside its user namespace, where the host's
//     root-owned directories only let it through as "other". Nothing in
//     them is named for other users to reach: each entry is 0700, or
//   - 0710 with the group of the pod's mapped root (MappedDirMode) for the
//     directory that holds one user-namespaced container's root filesystem,
//     as containerd does since CVE-2024-25621.
//
// Pod files (hostname, resolv.conf, /dev/shm) need no such way through:
// runc has the host side open the source of a bind mount its init cannot
// reach from the user namespace.
const (
	PrivateDirMode = 0o700
	PassDirMode    = 0o711
	MappedDirMode  = 0o710
)

// EnsureDir creates dir (and its missing parents) and gives it mode, also
// when it existed with a looser one (an older peapod made them 0711).
func EnsureDir(dir string, mode os.FileMode) error {
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

// EnsureMappedDir makes dir root's, 0710, with group gid: only the
// processes of the user namespace whose root is gid pass through.
func EnsureMappedDir(dir string, gid int) error {
	if err := os.Mkdir(dir, PrivateDirMode); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Group first, mode second: the directory is never open to gid before
	// it is root's.
	if err := os.Lchown(dir, 0, gid); err != nil {
		return fmt.Errorf("give %s to group %d: %w", dir, gid, err)
	}
	if err := os.Chmod(dir, MappedDirMode); err != nil {
		return fmt.Errorf("set the mode of %s: %w", dir, err)
	}
	return nil
}

// StateDir is one of peapod's own directories and the mode it must have.
type StateDir struct {
	Path string
	Mode os.FileMode
}

// StateDirs are peapod's directories: root and its private directories
// below state (0700), the state directory and the parent of user-namespaced
// root filesystems (0711, see above).
func StateDirs(root, state string, private ...string) []StateDir {
	dirs := []StateDir{{root, PrivateDirMode}, {state, PassDirMode}}
	for _, p := range private {
		dirs = append(dirs, StateDir{p, PrivateDirMode})
	}
	return append(dirs, StateDir{UsernsRootfsDir(state), PassDirMode})
}

// MakeStateDirs creates dirs, and tightens the modes an older peapod gave
// them. An older peapod bound user-namespaced containers' root filesystems
// at <state>/rootfs/<id>, open to every host user: that directory is
// closed (the containers there have resolved their path already; they are
// still unbound when removed).
func MakeStateDirs(state string, dirs []StateDir) error {
	for _, d := range dirs {
		if err := EnsureDir(d.Path, d.Mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(LegacyRootfsDir(state), PrivateDirMode); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("close %s: %w", LegacyRootfsDir(state), err)
	}
	return nil
}

// MoveAsideNonDirs moves aside what stands where one of dirs must be (a
// file, a symlink: a replaced directory), so that MakeStateDirs can make it
// again instead of failing the start. A symlink is never followed: it could
// lead the keepers' sockets or the bundles elsewhere.
func MoveAsideNonDirs(dirs []StateDir, log *slog.Logger) {
	for _, d := range dirs {
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
