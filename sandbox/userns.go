package sandbox

import (
	"context"
	"errors"
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/pause"
)

// User namespaces (hostUsers: false). The pod's keeper clones a holder
// process into a new user namespace with the kubelet's mappings, together
// with the pod's network, IPC, UTS and PID namespaces, so that the user
// namespace owns them all (sandbox/pause/pause.c); the keeper itself stays in
// the host user namespace. Containers join the holder's user namespace
// (named /proc/<holder>/ns/user in the spec; the runner joins it through
// the keeper's fd, sandbox/runner/holderns.go); their
// root filesystem is mounted by the image store with idmapped lower layers
// and an upper layer owned by the mapped root, and the kubelet's volumes
// become idmapped bind mounts.

// hostRoot is the host uid and gid of root in the pod's user namespace.
func hostRoot(u *runtimeapi.UserNamespace) (uid, gid int) {
	return int(u.GetUids()[0].GetHostId()), int(u.GetGids()[0].GetHostId())
}

// chownPodFiles gives the pod files every container mounts to the pod's
// root, so that root in the container owns them as it does elsewhere.
func chownPodFiles(dir string, u *runtimeapi.UserNamespace) error {
	uid, gid := hostRoot(u)
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
	if err := os.MkdirAll(dir, passDirMode); err != nil {
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

// UserNamespaces reports whether pods may ask for a user namespace of their
// own (the runtime handler feature in Status).
func (r *Runtime) UserNamespaces() bool {
	if r == nil {
		return false
	}
	ok, why := UserNamespacesSupported(r.opts.State)
	if !ok {
		r.usernsWarn.Do(func() { r.log.Warn("user namespaces are not supported here", "reason", why) })
	}
	return ok
}

// createRootfs has the image store create (or mount again) the container's
// root filesystem. For a pod with its own user namespace it is mapped, and
// it is bind-mounted at <state>/userns/<id>/rootfs: runc resolves the path
// from inside the user namespace, where root has no power over the image
// store's private (0700) directories. <id> is 0710 with the group of the
// pod's mapped root, so that no other host user reaches the container's
// files (perms.go).
func (r *Runtime) createRootfs(ctx context.Context, id, imageID string, pod *runtimeapi.PodSandboxConfig) (string, error) {
	u := oci.PodUserns(pod)
	if u == nil {
		return r.opts.Images.CreateRootfs(ctx, id, imageID)
	}
	src, err := r.opts.Images.CreateRootfsMapped(ctx, id, imageID, oci.IDMappings(u.GetUids()), oci.IDMappings(u.GetGids()))
	if err != nil {
		return "", err
	}
	dst := rootfsBindPath(r.opts.State, id)
	if isMountPoint(dst) {
		return dst, nil
	}
	if err := ensureDir(usernsRootfsDir(r.opts.State), passDirMode); err != nil {
		return "", fmt.Errorf("rootfs bind directory: %w", err)
	}
	_, gid := hostRoot(u)
	if err := ensureMappedDir(filepath.Dir(dst), gid); err != nil {
		return "", fmt.Errorf("rootfs bind directory: %w", err)
	}
	if err := os.Mkdir(dst, privateDirMode); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("create rootfs bind point: %w", err)
	}
	if err := bindRootfs(src, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// bindRootfs binds the container's root filesystem at dst, nodev (nothing
// in a root filesystem is a device for the host to open) and private.
// runc's own bind of dst inherits these flags, so nosuid is only set once
// the container has started (sealRootfsBind): before, the container's
// setuid programs would stop working. What keeps host users from the
// container's setuid binaries until then is the 0710 directory above dst.
func bindRootfs(src, dst string) error {
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

// sealRootfsBind makes the host's bind of a started user-namespaced
// container's root filesystem nosuid too. The container's own mounts are
// copies made when it started, so they keep their setuid programs working,
// while nothing run from the host's copy gains the mapped root's uid.
func (r *Runtime) sealRootfsBind(c *container, p *Pod) {
	if oci.PodUserns(p.Config) == nil {
		return
	}
	dst := rootfsBindPath(r.opts.State, c.ID)
	if !isMountPoint(dst) {
		return // bound elsewhere by an older peapod
	}
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		// The 0710 directory above still keeps other host users out.
		r.log.Warn("make the host's bind of a container's root filesystem nosuid", "container", c.ID, "err", err)
	}
}

// removeRootfs unbinds what createRootfs bound (also where an older peapod
// bound it) and has the image store remove the container's layer.
func (r *Runtime) removeRootfs(ctx context.Context, id string) error {
	for _, dst := range []string{rootfsBindPath(r.opts.State, id), filepath.Join(legacyRootfsDir(r.opts.State), id)} {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unbind root filesystem %s: %w", dst, err)
		}
		if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove rootfs bind point: %w", err)
		}
	}
	if err := os.Remove(filepath.Dir(rootfsBindPath(r.opts.State, id))); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove rootfs bind directory: %w", err)
	}
	return r.opts.Images.RemoveRootfs(ctx, id)
}

// usernsRootfsDir holds a directory per user-namespaced container, with
// its root filesystem bound at rootfs inside.
func usernsRootfsDir(state string) string { return filepath.Join(state, "userns") }

func rootfsBindPath(state, id string) string {
	return filepath.Join(usernsRootfsDir(state), id, "rootfs")
}

// legacyRootfsDir is where peapod before 0710 bind directories bound the
// root filesystems (<state>/rootfs/<id>).
func legacyRootfsDir(state string) string { return filepath.Join(state, "rootfs") }

// isMountPoint tells whether path is on another filesystem than its parent
// (enough for the overlay bound there).
func isMountPoint(path string) bool {
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

// checkUsernsSupport refuses a pod user namespace where Status does not
// offer one.
func (r *Runtime) checkUsernsSupport(cfg *runtimeapi.PodSandboxConfig) error {
	if oci.PodUserns(cfg) == nil {
		return nil
	}
	if ok, why := UserNamespacesSupported(r.opts.State); !ok {
		return fmt.Errorf("user namespaces are not supported here: %s: %w", why, ErrFailedPrecondition)
	}
	return nil
}

// chownImageVolumes gives the directories makeImageVolumes created in a
// mapped root filesystem to the pod's root. They are the only entries there
// that belong to the host's root: through the idmapped layers every image
// file shows a mapped owner.
func chownImageVolumes(rootfs string, volumes []string, mounts []*runtimeapi.Mount, pod *runtimeapi.PodSandboxConfig) error {
	u := oci.PodUserns(pod)
	if u == nil {
		return nil
	}
	uid, gid := hostRoot(u)
	for _, v := range volumes {
		dst := path.Clean("/" + v)
		if dst == "/" || coveredByMount(dst, mounts) {
			continue
		}
		prefix := ""
		for _, part := range strings.Split(strings.TrimPrefix(dst, "/"), "/") {
			prefix += "/" + part
			p, err := securejoin.SecureJoin(rootfs, prefix)
			if err != nil {
				return fmt.Errorf("image volume %s: %w", v, err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return fmt.Errorf("image volume %s: %w", v, err)
			}
			if st.Uid == 0 && st.Gid == 0 && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := os.Lchown(p, uid, gid); err != nil {
					return fmt.Errorf("image volume %s: %w", v, err)
				}
			}
		}
	}
	return nil
}
