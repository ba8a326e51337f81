package sandbox

import (
	"os"
	"path/filepath"
	"strings"
)

// exeSealOverlaps reports whether libcontainer must copy the peapod binary
// for every container start and exec. libcontainer runs "peapod init" from
// a sealed handle of /proc/self/exe, so that a container cannot overwrite
// the host's binary. It gets one without a copy from a read-only overlayfs
// whose lower layers are the binary's directory and the container's state
// directory (under lcRoot); overlayfs refuses layers that overlap (ELOOP),
// as they do when lcRoot lies below the binary's directory, and libcontainer
// then copies the whole binary into a sealed memfd each time: ~40 ms and
// 47 MB of page writes per exec, measured with the exec bench (ExecSync
// `true` p50 55 ms instead of 16 ms).
func exeSealOverlaps(exe, lcRoot string) bool {
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

// selfExe is the running binary, as the kernel sees it.
func selfExe() string {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return ""
	}
	return exe
}
