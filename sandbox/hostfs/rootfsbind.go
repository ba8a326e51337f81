package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The root filesystem of a user-namespaced container is bound at
// RootfsBindPath: runc resolves the path from inside the user namespace,
// where root has no power over the image store's private (0700)
// directories. Its directory is 0710 with the group of the pod's mapped
// root (gid), so that no other host user reaches the container's files.

// BindMappedRootfs binds the mapped root filesystem src of container id
// at its RootfsBindPath, which it returns; a bind already there is kept.
func BindMappedRootfs(state, id, src string, gid int) (string, error) {
	dst := RootfsBindPath(state, id)
	if IsMountPoint(dst) {
		return dst, nil
	}
	if err := EnsureDir(UsernsRootfsDir(state), PassDirMode); err != nil {
		return "", fmt.Errorf("rootfs bind directory: %w", err)
	}
	if err := EnsureMappedDir(filepath.Dir(dst), gid); err != nil {
		return "", fmt.Errorf("rootfs bind directory: %w", err)
	}
	if err := os.Mkdir(dst, PrivateDirMode); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("create rootfs bind point: %w", err)
	}
	if err := BindRootfs(src, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// SealRootfsBind makes the host's bind of a started container's root
// filesystem nosuid too. The container's own mounts are copies made when
// it started, so they keep their setuid programs working, while nothing
// run from the host's copy gains the mapped root's uid. A container bound
// elsewhere (by an older peapod) is left alone.
func SealRootfsBind(state, id string) error {
	dst := RootfsBindPath(state, id)
	if !IsMountPoint(dst) {
		return nil
	}
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("make %s nosuid: %w", dst, err)
	}
	return nil
}

// UnbindRootfs undoes BindMappedRootfs (also where an older peapod bound
// the root filesystem) and removes the bind's directory.
func UnbindRootfs(state, id string) error {
	for _, dst := range []string{RootfsBindPath(state, id), filepath.Join(LegacyRootfsDir(state), id)} {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unbind root filesystem %s: %w", dst, err)
		}
		if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove rootfs bind point: %w", err)
		}
	}
	if err := os.Remove(filepath.Dir(RootfsBindPath(state, id))); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove rootfs bind directory: %w", err)
	}
	return nil
}
