package hostfs

import (
	"fmt"
	"github.com/peapod-cri/peapod/oci"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerLogPath places the kubelet's relative log path inside the pod's
// log directory, for ContainerStatus. A ".." element is refused, and
// symlinks already in the directory are resolved as if it were the root
// (filepath-securejoin). The keeper does not open this path: it opens the
// relative path beneath the directory by handle, without following any
// symlink (ContainerLogLocation, sandbox/pause/log.c), so a directory
// replaced by a symlink later is not followed either.
func ContainerLogPath(dir, rel string) (string, error) {
	if dir == "" || rel == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) || filepath.IsAbs(rel) || hasDotDot(rel) {
		return "", fmt.Errorf("log path %q in directory %q must be relative to an absolute directory, without \"..\": %w", rel, dir, oci.ErrInvalidArgument)
	}
	p, err := securejoin.SecureJoin(dir, rel)
	if err != nil {
		return "", fmt.Errorf("resolve log path %q in %q: %v: %w", rel, dir, err, oci.ErrInvalidArgument)
	}
	return p, nil
}

func hasDotDot(p string) bool {
	for _, el := range strings.Split(filepath.ToSlash(p), "/") {
		if el == ".." {
			return true
		}
	}
	return false
}

// ContainerLogLocation is what the keeper opens the container's log with:
// the pod's log directory and the log's path relative to it as
// ContainerLogPath resolved it at create, both "" when the kubelet asked
// for no log. Symlinks that were in the directory at create stay resolved
// as they were; any put there since are not followed.
func ContainerLogLocation(pod *runtimeapi.PodSandboxConfig, logPath string) (dir, rel string, err error) {
	dir = pod.GetLogDirectory()
	if dir == "" || logPath == "" {
		return "", "", nil
	}
	dir = filepath.Clean(dir)
	rel, err = filepath.Rel(dir, logPath)
	if err != nil || filepath.IsAbs(rel) || hasDotDot(rel) || rel == "." {
		return "", "", fmt.Errorf("log path %q is not inside the pod's log directory %q: %w", logPath, dir, oci.ErrInvalidArgument)
	}
	return dir, rel, nil
}
