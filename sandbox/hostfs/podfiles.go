package hostfs

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/oci"
)

// podFiles are the contents of the files every container of the pod
// mounts.
type podFiles struct {
	hostname, resolvConf []byte
}

func podFilesOf(cfg *runtimeapi.PodSandboxConfig) (podFiles, error) {
	resolv, err := oci.ResolvConf(cfg.GetDnsConfig())
	if err != nil {
		return podFiles{}, err
	}
	return podFiles{hostname: []byte(oci.Hostname(cfg) + "\n"), resolvConf: resolv}, nil
}

// writePodFiles writes the files every container of the pod mounts:
// hostname, resolv.conf, and a tmpfs for /dev/shm when the IPC namespace is
// the pod's own.
func writePodFiles(dir string, cfg *runtimeapi.PodSandboxConfig, f podFiles) error {
	if err := os.WriteFile(filepath.Join(dir, "hostname"), f.hostname, 0o644); err != nil {
		return fmt.Errorf("write hostname: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), f.resolvConf, 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() != runtimeapi.NamespaceMode_NODE {
		shm := filepath.Join(dir, "shm")
		// Open to every user of the pod (mode=1777 of the tmpfs), but not
		// to the host's: the pod directory is root's alone.
		if err := os.MkdirAll(shm, PrivateDirMode); err != nil {
			return fmt.Errorf("create shm dir: %w", err)
		}
		if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
			return fmt.Errorf("mount pod /dev/shm: %w", err)
		}
	}
	return nil
}

// The pod's directory is a tmpfs of its own, holding its hostname and
// resolv.conf. Containers bind those files writable (as containerd and
// CRI-O do, and images expect), so whatever a container writes there would
// land in the daemon's state directory (a tmpfs, /run, on most nodes):
// outside everything the kubelet measures, and, on tmpfs, host memory that
// outlives the container. The tmpfs bounds it: what the files hold at the
// start plus podFilesRoom, and a few inodes (the root, the two files, the
// shm mount point); a bigger write gets ENOSPC in the container. The mode
// is the pod directory's.
const podFilesRoom = 256 << 10

// mountPodDir makes the pod's directory a small tmpfs of its own, sized
// for the files f that writePodFiles writes there.
func mountPodDir(dir string, f podFiles) error {
	pages := func(n int) int { return (n + 4095) / 4096 * 4096 }
	size := pages(len(f.resolvConf)) + pages(len(f.hostname)) + podFilesRoom
	// Not noexec: each file's bind into a container copies the mount's
	// flags, and a user-namespaced container could not drop a locked one.
	opts := fmt.Sprintf("mode=0700,size=%d,nr_inodes=16", size)
	if err := unix.Mount("podfiles", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount pod files tmpfs: %w", err)
	}
	return nil
}

// UnmountPodFiles unmounts the pod's /dev/shm tmpfs, then the tmpfs of the
// pod's directory (its hostname and resolv.conf go with it); not mounted is
// fine (a pod started by an older peapod has its files on the state
// directory itself).
func UnmountPodFiles(dir string) {
	_ = unix.Unmount(filepath.Join(dir, "shm"), unix.MNT_DETACH)
	_ = unix.Unmount(dir, unix.MNT_DETACH)
}

// MakePodFiles makes the pod's directory, a small tmpfs (mountPodDir), and
// the files its containers mount (writePodFiles; owned by the pod's user
// namespace's root if it has one). The undo it returns removes them.
func MakePodFiles(dir string, cfg *runtimeapi.PodSandboxConfig) (undo func(), err error) {
	files, err := podFilesOf(cfg)
	if err != nil {
		return nil, err
	}
	if err := EnsureDir(dir, PrivateDirMode); err != nil {
		return nil, fmt.Errorf("pod dir: %w", err)
	}
	if err := mountPodDir(dir, files); err != nil {
		os.Remove(dir)
		return nil, err
	}
	undo = func() {
		UnmountPodFiles(dir)
		os.RemoveAll(dir)
	}
	if err := writePodFiles(dir, cfg, files); err != nil {
		undo()
		return nil, err
	}
	if u := oci.PodUserns(cfg); u != nil {
		if err := ChownPodFiles(dir, u); err != nil {
			undo()
			return nil, err
		}
	}
	return undo, nil
}

// CheckMounts refuses mounts a container cannot get: a relative
// container path, recursive read-only without readonly and private
// propagation, a writable image volume or one with a host path, a host
// path that is not there.
func CheckMounts(mounts []*runtimeapi.Mount) error {
	for _, m := range mounts {
		if m.GetContainerPath() == "" || !filepath.IsAbs(m.GetContainerPath()) {
			return fmt.Errorf("mount container path %q must be absolute: %w", m.GetContainerPath(), oci.ErrInvalidArgument)
		}
		if m.GetRecursiveReadOnly() && !m.GetReadonly() {
			return fmt.Errorf("mount at %s: recursive read-only needs readonly: %w", m.GetContainerPath(), oci.ErrInvalidArgument)
		}
		if m.GetRecursiveReadOnly() && m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return fmt.Errorf("mount at %s: recursive read-only needs private propagation, not %s: %w", m.GetContainerPath(), m.GetPropagation(), oci.ErrInvalidArgument)
		}
		if m.GetImage() != nil {
			// An image volume is read-only by definition (KEP-4639): a
			// writable one is a wrong request whether or not it is built.
			if !m.GetReadonly() {
				return fmt.Errorf("image volume at %s must be read-only: %w", m.GetContainerPath(), oci.ErrInvalidArgument)
			}
			if m.GetHostPath() != "" {
				return fmt.Errorf("image volume at %s has a host path %q too: %w", m.GetContainerPath(), m.GetHostPath(), oci.ErrInvalidArgument)
			}
			continue // its image is found and mounted by the sandbox (sandbox/imagevolumes.go)
		}
		if _, err := os.Stat(m.GetHostPath()); err != nil {
			return fmt.Errorf("mount source %q for %s: %v: %w", m.GetHostPath(), m.GetContainerPath(), err, oci.ErrInvalidArgument)
		}
	}
	return nil
}
