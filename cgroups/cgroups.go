// Package cgroups turns pods' and containers' places in the cgroup tree into
// paths. Limits, stats and OOM events come with the resources issue; cgroups
// are created and removed by libcontainer's cgroupfs manager.
package cgroups

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/systemd"
)

// ContainerPath is the cgroupfs path of a container in its pod's cgroup.
// An absolute path is taken from the root of each hierarchy, a relative
// one nests under peapod's own cgroup (how tests keep their cgroups apart).
// Below a systemd slice the container gets the scope name systemd would
// give it (peapod-<id>.scope), as runc's systemd driver names containers.
func ContainerPath(parent, containerID string) string {
	name := "peapod-" + containerID
	if IsSystemdSlice(parent) {
		name += ".scope"
	}
	if parent == "" {
		return name
	}
	return path.Join(parent, name)
}

// IsSystemdSlice reports whether parent is a systemd slice: a slice name
// (kubepods-burstable-pod<uid>.slice), or a path whose last component is one
// (/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice),
// the two forms kubelet's systemd driver passes.
func IsSystemdSlice(parent string) bool {
	return strings.HasSuffix(path.Base(parent), ".slice")
}

// SlicePath is the cgroupfs path systemd gives a slice: the name
// kubepods-burstable-pod<uid>.slice expands to
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice.
// A path is returned as it is. peapod runs without systemd: with the systemd
// driver it manages these directories itself, with cgroupfs.
func SlicePath(slice string) (string, error) {
	if strings.Contains(slice, "/") {
		return slice, nil
	}
	p, err := systemd.ExpandSlice(slice)
	if err != nil {
		return "", fmt.Errorf("cgroup parent %q: %w", slice, err)
	}
	return p, nil
}

// Mode names the cgroup hierarchy of this host, for logs and status.
func Mode() string {
	if ocgroups.IsCgroup2UnifiedMode() {
		return "v2"
	}
	return "v1"
}

// OOMKills returns how many processes the kernel's OOM killer has killed in
// the cgroup whose controller paths are given (libcontainer's
// State.CgroupPaths): memory.events on v2, memory.oom_control on v1. Read at
// exit, this catches kills that happen within milliseconds of start, which an
// event registered after start can miss.
func OOMKills(paths map[string]string) (uint64, error) {
	if dir, ok := paths[""]; ok && ocgroups.IsCgroup2UnifiedMode() {
		n, err := readCounter(path.Join(dir, "memory.events"), "oom_kill")
		if !isSystemdScope(dir) {
			return n, err
		}
		return exitedScopeOOMKills(dir, n, err)
	}
	dir, ok := paths["memory"]
	if !ok {
		return 0, fmt.Errorf("no memory cgroup in %v", paths)
	}
	return readCounter(path.Join(dir, "memory.oom_control"), "oom_kill")
}

// exitedScopeOOMKills decides the OOM kills of an exited container in a
// scope systemd manages, given the read of its own counter (n, err). Every
// exit of a scope is accounted in its pod slice and ends its watch,
// whatever decides.
func exitedScopeOOMKills(dir string, n uint64, err error) (uint64, error) {
	sliceKilled := sliceOOMKilled(dir)
	seen := oomSeen(dir)
	if err == nil {
		return n, nil
	}
	// systemd removes a scope's cgroup as soon as it is empty, often before
	// the exit is seen here: while it does, the read fails with ENODEV,
	// after with ENOENT. Then what the watch saw (oomwatch.go), the pod
	// slice's count, or systemd's verdict on the unit.
	if sliceKilled || seen {
		return 1, nil
	}
	return scopeOOMKills(path.Base(dir))
}

// readCounter finds "key value" in a flat-keyed cgroup file.
func readCounter(file, key string) (uint64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return parseCounter(data, file, key)
}

// parseCounter finds "key value" in a flat-keyed cgroup file's content.
func parseCounter(data []byte, file, key string) (uint64, error) {
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %s", file, key)
}
