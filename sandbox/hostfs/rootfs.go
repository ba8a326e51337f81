package hostfs

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/pause"
)

// HostRoot is the host uid and gid of root in the pod's user namespace.
func HostRoot(u *runtimeapi.UserNamespace) (uid, gid int) {
	return int(u.GetUids()[0].GetHostId()), int(u.GetGids()[0].GetHostId())
}

// ChownPodFiles gives the pod files every container mounts to the pod's
// root, so that root in the container owns them as it does elsewhere.
func ChownPodFiles(dir string, u *runtimeapi.UserNamespace) error {
	uid, gid := HostRoot(u)
	for _, name := range []string{"hostname", "resolv.conf", "shm"} {
		if err := os.Lchown(filepath.Join(dir, name), uid, gid); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("chown pod file %s: %w", name, err)
		}
	}
	return nil
}

var (
	usernsOnce      sync.Once
	usernsSupported bool
	usernsReason    string
)

// UserNamespacesSupported reports whether pods can get user namespaces
// here: the kernel has them and can idmap mounts of the filesystem under
// dir (the state directory; probed once), and the containers' processes can
// pass through dir's path.
func UserNamespacesSupported(dir string) (bool, string) {
	usernsOnce.Do(func() {
		if err := probeIDMap(dir); err != nil {
			usernsReason = err.Error()
			return
		}
		usernsSupported = true
	})
	if !usernsSupported {
		return false, usernsReason
	}
	if err := traversable(dir); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// probeIDMap creates a user namespace (the pause process, cloned into one)
// and idmaps a detached copy of the mount at dir with it.
func probeIDMap(dir string) error {
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		return fmt.Errorf("no user namespaces in this kernel: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, PassDirMode); err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path: exe,
		Args: []string{"peapod", pause.Command},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1 << 30, Size: 65536}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1 << 30, Size: 65536}},
		},
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("create a user namespace: %w", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	userns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	if err != nil {
		return err
	}
	defer userns.Close()
	tree, err := unix.OpenTree(-1, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", dir, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("idmapped mount of %s: %w", dir, err)
	}
	return nil
}

// BindRootfs binds the container's root filesystem at dst, nodev (nothing
// in a root filesystem is a device for the host to open) and private.
// runc's own bind of dst inherits these flags, so nosuid is only set once
// the container has started (SealRootfsBind): before, the container's
// setuid programs would stop working. What keeps host users from the
// container's setuid binaries until then is the 0710 directory above dst.
func BindRootfs(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind root filesystem at %s: %w", dst, err)
	}
	// Flags of a bind mount only take with a remount.
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NODEV, ""); err != nil {
		unix.Unmount(dst, unix.MNT_DETACH)
		return fmt.Errorf("make root filesystem at %s nodev: %w", dst, err)
	}
	_ = unix.Mount("", dst, "", unix.MS_PRIVATE, "")
	return nil
}

// UsernsRootfsDir holds a directory per user-namespaced container, with
// its root filesystem bound at rootfs inside.
func UsernsRootfsDir(state string) string { return filepath.Join(state, "userns") }

func RootfsBindPath(state, id string) string {
	return filepath.Join(UsernsRootfsDir(state), id, "rootfs")
}

// LegacyRootfsDir is where peapod before 0710 bind directories bound the
// root filesystems (<state>/rootfs/<id>).
func LegacyRootfsDir(state string) string { return filepath.Join(state, "rootfs") }

// IsMountPoint tells whether path is on another filesystem than its parent
// (enough for the overlay bound there).
func IsMountPoint(path string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Lstat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// traversable checks that every directory from / down to dir lets other
// users through: the processes of a user-namespaced container are "other"
// to the host's root-owned directories.
func traversable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by other users (mode %v); user-namespaced containers could not reach their files below it", d, st.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

// ChownImageVolumes gives the directories MakeImageVolumes created in a
// mapped root filesystem to the pod's root. They are the only entries there
// that belong to the host's root: through the idmapped layers every image
// file shows a mapped owner.
//
// Each volume is resolved once inside rootfs by handle (openat2
// RESOLVE_IN_ROOT, as MakeImageVolumes resolved it) and walked up through
// "..": the directories it created lie on that resolved path. A directory
// already seen ends the walk, so the work is linear in the paths' length.
// (Resolving every prefix of every path again by name cost a cube of their
// depth: one VOLUME 1,500 directories deep in a hostile image held a
// CreateContainer for minutes.)
func ChownImageVolumes(rootfs string, volumes []string, mounts []*runtimeapi.Mount, pod *runtimeapi.PodSandboxConfig) error {
	u := oci.PodUserns(pod)
	if u == nil {
		return nil
	}
	uid, gid := HostRoot(u)
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open root filesystem %s: %w", rootfs, err)
	}
	defer unix.Close(root)
	var st unix.Stat_t
	if err := unix.Fstat(root, &st); err != nil {
		return fmt.Errorf("stat root filesystem %s: %w", rootfs, err)
	}
	seen := map[fileID]bool{{st.Dev, st.Ino}: true} // the walks end at the root
	for _, v := range volumes {
		dst := path.Clean("/" + v)
		if dst == "/" || coveredByMount(dst, mounts) {
			continue
		}
		if err := chownUp(root, dst, uid, gid, seen); err != nil {
			return fmt.Errorf("image volume %s: %w", v, err)
		}
	}
	return nil
}

type fileID struct{ dev, ino uint64 }

// chownUp gives the directory dst resolves to inside root, and each of its
// parents below root not seen before, to uid:gid where it is the host
// root's (0:0).
func chownUp(root int, dst string, uid, gid int, seen map[fileID]bool) error {
	var fd int
	var err error
	for {
		fd, err = unix.Openat2(root, dst, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != unix.EINTR && err != unix.EAGAIN {
			break
		}
	}
	if err != nil {
		return err
	}
	for {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return err
		}
		id := fileID{st.Dev, st.Ino}
		if seen[id] {
			unix.Close(fd)
			return nil
		}
		seen[id] = true
		if st.Uid == 0 && st.Gid == 0 && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
				unix.Close(fd)
				return err
			}
		}
		parent, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return err
		}
		fd = parent
	}
}

// maxImageVolumeBytes bounds the VOLUME paths of an image config taken
// together. Each directory of each path is made (and, in a user-namespaced
// pod, chowned) by the daemon at every create: the megabytes of deep paths
// an 8 MiB config can hold would be millions of directories, on the
// daemon's CPU and the node's disk. Images declare a handful of volumes.
const maxImageVolumeBytes = 64 << 10

// MakeImageVolumes creates the image's declared VOLUME directories in the
// container's writable layer, unless a mount covers them (CRI-O's "mkdir"
// image_volumes mode: the directory exists, its content is the image's).
// The paths come from the image, so they are resolved inside the rootfs:
// a symlink in the image cannot make peapod create a directory elsewhere.
func MakeImageVolumes(rootfs string, volumes []string, mounts []*runtimeapi.Mount) error {
	total := 0
	for _, v := range volumes {
		total += len(v)
	}
	if total > maxImageVolumeBytes {
		return fmt.Errorf("the image declares %d volumes with %d bytes of paths, more than the %d bytes allowed: %w",
			len(volumes), total, maxImageVolumeBytes, oci.ErrInvalidArgument)
	}
	for _, v := range volumes {
		dst := path.Clean("/" + v)
		if dst == "/" || coveredByMount(dst, mounts) {
			continue
		}
		if err := pathrs.MkdirAll(rootfs, dst, 0o755); err != nil {
			return fmt.Errorf("image volume %s: %w", v, err)
		}
	}
	return nil
}

func coveredByMount(dst string, mounts []*runtimeapi.Mount) bool {
	for _, m := range mounts {
		if path.Clean(m.GetContainerPath()) == dst {
			return true
		}
	}
	return false
}
