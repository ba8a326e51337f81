// Package seal makes handles of binaries that a container cannot write
// through /proc/<pid>/exe, as libcontainer seals its own init: for the
// exec helper and the pause.
package seal

import (
	"fmt"
	"github.com/opencontainers/runc/libcontainer/exeseal"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"strings"
)

// Overlaps reports whether libcontainer must copy the peapod binary
// for every container start and exec. libcontainer runs "peapod init" from
// a sealed handle of /proc/self/exe, so that a container cannot overwrite
// the host's binary. It gets one without a copy from a read-only overlayfs
// whose lower layers are the binary's directory and the container's state
// directory (under lcRoot); overlayfs refuses layers that overlap (ELOOP),
// as they do when lcRoot lies below the binary's directory, and libcontainer
// then copies the whole binary into a sealed memfd each time: ~40 ms and
// 47 MB of page writes per exec, measured with the exec bench (ExecSync
// `true` p50 55 ms instead of 16 ms).
func Overlaps(exe, lcRoot string) bool {
	resolve := func(p string) string {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Clean(p)
	}
	rel, err := filepath.Rel(resolve(filepath.Dir(exe)), resolve(lcRoot))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// SelfExe is the running binary, as the kernel sees it.
func SelfExe() string {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return ""
	}
	return exe
}

// Binary returns a handle of exe that cannot be written: through a
// read-only overlayfs of exe's directory (no copy), else a sealed memfd
// copy when exe is small enough to copy once.
func Binary(exe, emptyDir string) (*os.File, error) {
	if err := os.MkdirAll(emptyDir, 0o700); err != nil {
		return nil, err
	}
	f, err := sealedOverlay(exe, emptyDir)
	if err == nil {
		return f, nil
	}
	src, err2 := os.Open(exe)
	if err2 != nil {
		return nil, err2
	}
	defer src.Close()
	st, err2 := src.Stat()
	if err2 != nil {
		return nil, err2
	}
	if st.Size() > 16<<20 {
		return nil, fmt.Errorf("overlayfs seal: %v; %s is too big to copy", err, exe)
	}
	return exeseal.CloneBinary(src, st.Size(), exe, emptyDir)
}

// sealedOverlay is libcontainer's exeseal overlay for a binary of our
// choice: a detached, read-only overlayfs whose lower layers are the
// binary's directory and an empty one.
func sealedOverlay(exe, emptyDir string) (*os.File, error) {
	esc := func(p string) string { return strings.ReplaceAll(strings.ReplaceAll(p, `\`, `\\`), `:`, `\:`) }
	ctx, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(ctx)
	dir, name := filepath.Split(exe)
	if err := unix.FsconfigSetString(ctx, "lowerdir", esc(dir)+":"+esc(emptyDir)); err != nil {
		return nil, fmt.Errorf("overlay lowerdir: %w", err)
	}
	_ = unix.FsconfigSetString(ctx, "xino", "off")
	if err := unix.FsconfigCreate(ctx); err != nil {
		return nil, fmt.Errorf("create overlay: %w", err)
	}
	mnt, err := unix.Fsmount(ctx, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
	if err != nil {
		return nil, fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mnt)
	fd, err := unix.Openat(mnt, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s in the overlay: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "sealed:"+exe), nil
}
