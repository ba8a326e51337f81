package sandbox

import (
	"fmt"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// containerLogPath places the kubelet's relative log path inside the pod's
// log directory. A ".." element is refused, and symlinks already in the
// directory are resolved as if it were the root (filepath-securejoin), so
// the log can never land outside it, whatever the directory holds. The
// keeper opens the result with O_NOFOLLOW (sandbox/pause/log.c), so a
// symlink put there later is not followed either.
func containerLogPath(dir, rel string) (string, error) {
	if dir == "" || rel == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) || filepath.IsAbs(rel) || hasDotDot(rel) {
		return "", fmt.Errorf("log path %q in directory %q must be relative to an absolute directory, without \"..\": %w", rel, dir, ErrInvalidArgument)
	}
	p, err := securejoin.SecureJoin(dir, rel)
	if err != nil {
		return "", fmt.Errorf("resolve log path %q in %q: %v: %w", rel, dir, err, ErrInvalidArgument)
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
