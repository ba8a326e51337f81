package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// An image volume (Mount.image) is bound at ImageVolumePath before the
// container starts: the image's merged filesystem, or the directory its
// image_sub_path names inside it. The spec's bind mount takes that bind as
// its source, so the container sees exactly what was resolved here, and a
// restarted daemon finds it there (state survives the daemon, not a
// reboot). The bind is read-only, nosuid and nodev on the host side too.

// ImageVolumesDir holds a directory per container with image volumes.
func ImageVolumesDir(state string) string { return filepath.Join(state, "image-volumes") }

// ImageVolumePath is where mount n of container id is bound.
func ImageVolumePath(state, id string, n int) string {
	return filepath.Join(ImageVolumesDir(state), id, strconv.Itoa(n))
}

// HasImageVolumes tells whether container id has (or had, before a crash
// cut its creation) image volumes bound.
func HasImageVolumes(state, id string) bool {
	_, err := os.Lstat(filepath.Join(ImageVolumesDir(state), id))
	return err == nil
}

// MarkImageVolumes makes container id's directory of image volume binds,
// before anything is mounted for it: its presence is what says, after a
// crash, that the container's image volumes must be released.
func MarkImageVolumes(state, id string) error {
	if err := EnsureDir(ImageVolumesDir(state), PrivateDirMode); err != nil {
		return fmt.Errorf("image volumes directory: %w", err)
	}
	if err := os.Mkdir(filepath.Join(ImageVolumesDir(state), id), PrivateDirMode); err != nil && !os.IsExist(err) {
		return fmt.Errorf("image volumes directory of %s: %w", id, err)
	}
	return nil
}

// BindImageVolume binds the image filesystem mounted at root, or its
// directory subPath, at ImageVolumePath(state, id, n) and returns that
// path; a bind already there is kept. The image's content is not trusted:
// subPath is resolved by handle inside root (openat2 RESOLVE_IN_ROOT, as
// the image's own absolute symlinks mean), never through a symlink out of
// it, and the bind takes the directory that handle holds, not a path
// resolved again. A subPath that is not in the image wraps
// os.ErrNotExist; one that is not a directory wraps unix.ENOTDIR.
func BindImageVolume(state, id string, n int, root, subPath string) (string, error) {
	dst := ImageVolumePath(state, id, n)
	if IsMountPoint(dst) {
		return dst, nil
	}
	if err := MarkImageVolumes(state, id); err != nil {
		return "", err
	}
	if err := os.Mkdir(dst, PrivateDirMode); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("create image volume bind point: %w", err)
	}
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open image filesystem %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	fd := rootFd
	if subPath != "" {
		fd, err = unix.Openat2(rootFd, subPath, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		})
		switch {
		case errors.Is(err, unix.ENOENT):
			return "", fmt.Errorf("sub-path %q is not in the image: %w", subPath, os.ErrNotExist)
		case errors.Is(err, unix.ENOTDIR):
			return "", fmt.Errorf("sub-path %q is not a directory in the image (only directories can be mounted): %w", subPath, unix.ENOTDIR)
		case err != nil:
			return "", fmt.Errorf("resolve sub-path %q in the image: %w", subPath, err)
		}
		defer unix.Close(fd)
	}
	// open_tree clones the mount at exactly the directory fd holds.
	tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return "", fmt.Errorf("clone image volume mount: %w", err)
	}
	defer unix.Close(tree)
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{
		Attr_set:    unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Propagation: unix.MS_PRIVATE,
	}); err != nil {
		return "", fmt.Errorf("make image volume mount read-only: %w", err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return "", fmt.Errorf("bind image volume at %s: %w", dst, err)
	}
	return dst, nil
}

// UnbindImageVolumes undoes BindImageVolume for every mount of container
// id and removes its directory. None is not an error.
func UnbindImageVolumes(state, id string) error {
	dir := filepath.Join(ImageVolumesDir(state), id)
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read image volumes of %s: %w", id, err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unbind image volume %s: %w", p, err)
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove image volume bind point: %w", err)
		}
	}
	return nil
}

// RemoveImageVolumesDir removes container id's (now empty) directory of
// image volume binds: the last step of their release.
func RemoveImageVolumesDir(state, id string) error {
	if err := os.Remove(filepath.Join(ImageVolumesDir(state), id)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove image volumes directory of %s: %w", id, err)
	}
	return nil
}
