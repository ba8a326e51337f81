// Package cgroups turns pods' and containers' places in the cgroup tree into
// paths. Limits, stats and OOM events come with the resources issue; cgroups
// are created and removed by libcontainer's cgroupfs manager.
package cgroups

import (
	"path"
	"strings"

	ocgroups "github.com/opencontainers/cgroups"
)

// ContainerPath is the cgroupfs path of a container under its pod's parent.
// An absolute parent is taken from the root of each hierarchy, a relative
// one nests under peapod's own cgroup (how tests keep their cgroups apart).
func ContainerPath(parent, containerID string) string {
	name := "peapod-" + containerID
	if parent == "" {
		return name
	}
	return path.Join(parent, name)
}

// IsSystemdSlice reports whether parent is written in systemd's slice
// syntax (kubepods-burstable-pod<uid>.slice), which needs the systemd driver.
func IsSystemdSlice(parent string) bool {
	return strings.HasSuffix(path.Base(parent), ".slice")
}

// Mode names the cgroup hierarchy of this host, for logs and status.
func Mode() string {
	if ocgroups.IsCgroup2UnifiedMode() {
		return "v2"
	}
	return "v1"
}
