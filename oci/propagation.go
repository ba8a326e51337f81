package oci

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// checkPropagation refuses, as containerd does, a bidirectional mount whose
// source is not on a shared mount, and a host-to-container one whose source
// is on neither a shared nor a slave mount: the container would silently
// see no propagation at all.
func checkPropagation(mounts []*runtimeapi.Mount, mountOf func(path string) (mountPoint, optional string, err error)) error {
	for _, m := range mounts {
		p := m.GetPropagation()
		if m.GetImage() != nil {
			continue // an image volume is always private
		}
		if p != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && p != runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER {
			continue
		}
		mnt, opts, err := mountOf(m.GetHostPath())
		if err != nil {
			return fmt.Errorf("mount %s: %v: %w", m.GetHostPath(), err, ErrInvalidArgument)
		}
		shared, slave := strings.Contains(opts, "shared:"), strings.Contains(opts, "master:")
		switch {
		case p == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && !shared:
			return fmt.Errorf("mount %s asks for bidirectional propagation but it is on %s, which is not a shared mount (mount --make-rshared %[2]s): %w", m.GetHostPath(), mnt, ErrInvalidArgument)
		case !shared && !slave:
			return fmt.Errorf("mount %s asks for host-to-container propagation but it is on %s, which is neither a shared nor a slave mount (mount --make-rshared %[2]s): %w", m.GetHostPath(), mnt, ErrInvalidArgument)
		}
	}
	return nil
}

// hostMountOf finds the mount point holding path and its optional fields
// (propagation: "shared:N", "master:N").
func hostMountOf(path string) (mountPoint, optional string, err error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", "", err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		pre, _, ok := strings.Cut(s.Text(), " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 6 {
			continue
		}
		mp := fields[4]
		if resolved != mp && !strings.HasPrefix(resolved, strings.TrimSuffix(mp, "/")+"/") {
			continue
		}
		// The last match is the one on top (a later mount hides earlier ones).
		if len(mp) >= len(mountPoint) {
			mountPoint, optional = mp, strings.Join(fields[6:], " ")
		}
	}
	if mountPoint == "" {
		return "", "", fmt.Errorf("no mount holds %s", resolved)
	}
	return mountPoint, optional, s.Err()
}
