package hostfs

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/oci"
)

// WritePodFiles writes the files every container of the pod mounts:
// hostname, resolv.conf, and a tmpfs for /dev/shm when the IPC namespace is
// the pod's own.
func WritePodFiles(dir string, cfg *runtimeapi.PodSandboxConfig) error {
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(oci.Hostname(cfg)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write hostname: %w", err)
	}
	resolv, err := oci.ResolvConf(cfg.GetDnsConfig())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), resolv, 0o644); err != nil {
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

// UnmountPodShm unmounts the pod's /dev/shm tmpfs; not mounted is fine.
func UnmountPodShm(dir string) {
	_ = unix.Unmount(filepath.Join(dir, "shm"), unix.MNT_DETACH)
}
