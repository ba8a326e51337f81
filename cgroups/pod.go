package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The layout of a pod, the same on v1 and v2:
//
//	<parent>/peapod-pod-<pod id>              the pod's limits (resources + overhead)
//	<parent>/peapod-pod-<pod id>/pause        the pause process
//	<parent>/peapod-pod-<pod id>/peapod-<id>  each container
//
// Under a systemd slice (the systemd driver), the names are those systemd
// would give: the pod is a child slice, the pause and containers scopes:
//
//	<slice path>/<slice>-peapod_pod_<pod id>.slice
//	<slice path>/<slice>-peapod_pod_<pod id>.slice/peapod-pause.scope
//	<slice path>/<slice>-peapod_pod_<pod id>.slice/peapod-<id>.scope
//
// The pause gets a leaf of its own because a v2 cgroup that has processes
// cannot hand controllers to children ("no internal processes").
const pauseLeaf, pauseScope = "pause", "peapod-pause.scope"

// podComponent starts the last component of a pod slice's name; no '-' in
// it, which would nest the slice deeper.
const podComponent = "peapod_pod_"

// PodPath is the cgroupfs path of a pod's cgroup under parent; a relative
// parent nests under peapod's own cgroup, as for ContainerPath. A systemd
// slice parent is expanded to its path (SlicePath).
func PodPath(parent, podID string) (string, error) {
	if IsSystemdSlice(parent) {
		dir, err := SlicePath(parent)
		if err != nil {
			return "", err
		}
		// A child slice's name is its parent's name plus "-<component>"
		// (the root slice "-.slice" has no prefix); no '-' in the component.
		prefix := strings.TrimSuffix(path.Base(dir), ".slice") + "-"
		if dir == "/" {
			prefix = ""
		}
		return path.Join(dir, prefix+podComponent+podID+".slice"), nil
	}
	name := "peapod-pod-" + podID
	if parent == "" {
		return name, nil
	}
	return path.Join(parent, name), nil
}

// CreatePod creates the pod's cgroup with the given limits; under a live
// systemd a transient slice whose limits are unit properties.
func CreatePod(podPath string, res *specs.LinuxResources) error {
	pod, err := podManager(podPath, res)
	if viaSystemd(podPath) {
		pod, err = systemdManager(podPath, res)
	}
	if err != nil {
		return err
	}
	if err := pod.Apply(-1); err != nil {
		return fmt.Errorf("create pod cgroup %s: %w", podPath, err)
	}
	if dir, ok := pod.GetPaths()[""]; ok && viaSystemd(podPath) {
		NoteSliceMade(dir) // its OOM kills are all this daemon's to account
	}
	if err := pod.Set(limitsOf(pod)); err != nil {
		pod.Destroy()
		return fmt.Errorf("set limits of pod cgroup %s: %w", podPath, err)
	}
	return nil
}

// AddPause moves the pod's pause process (and its namespace holder, which
// a container may see and signal) into their own leaf of the pod's cgroup,
// creating the leaf.
func AddPause(podPath string, pids ...int) error {
	if viaSystemd(podPath) {
		return addPauseScope(podPath, pids)
	}
	name := pauseLeaf
	if IsSystemdSlice(podPath) {
		name = pauseScope
	}
	leaf, err := podManager(path.Join(podPath, name), nil)
	if err != nil {
		return err
	}
	applied := false
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		if !applied || !IsSystemdSlice(podPath) {
			if err := leaf.Apply(pid); err != nil {
				return fmt.Errorf("move pause %d into %s: %w", pid, podPath, err)
			}
			applied = true
			continue
		}
		// A systemd scope is created once, with the first PID: join its
		// directories as systemd made them.
		for _, dir := range leaf.GetPaths() {
			if _, err := os.Stat(dir); err != nil {
				continue
			}
			if err := ocgroups.WriteCgroupProc(dir, pid); err != nil {
				return fmt.Errorf("move %d into %s: %w", pid, dir, err)
			}
		}
	}
	return nil
}

// addPauseScope starts the pause's transient scope with the first PID and
// has systemd attach the others to it.
func addPauseScope(podPath string, pids []int) error {
	scope, err := systemdManager(pauseUnitPath(podPath), nil)
	if err != nil {
		return err
	}
	applied := false
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		if !applied {
			if err := scope.Apply(pid); err != nil {
				return fmt.Errorf("move pause %d into a scope of %s: %w", pid, podPath, err)
			}
			applied = true
			continue
		}
		if err := scope.AddPid("", pid); err != nil {
			return fmt.Errorf("attach %d to the pause scope of %s: %w", pid, podPath, err)
		}
	}
	return nil
}

// UpdatePod applies new limits to the pod's cgroup while it runs.
func UpdatePod(podPath string, res *specs.LinuxResources) error {
	pod, err := podManager(podPath, res)
	if viaSystemd(podPath) {
		pod, err = systemdManager(podPath, res)
	}
	if err != nil {
		return err
	}
	if !exists(pod) {
		return fmt.Errorf("pod cgroup %s: %w", podPath, os.ErrNotExist)
	}
	if err := pod.Set(limitsOf(pod)); err != nil {
		return fmt.Errorf("update limits of pod cgroup %s: %w", podPath, err)
	}
	return nil
}

// RemovePod removes the pod's cgroup and everything below it; its
// processes must be gone. A pod cgroup that does not exist is not an error.
// Under a live systemd the slice is stopped, which stops its scopes.
func RemovePod(podPath string) error {
	pod, err := podManager(podPath, nil)
	if viaSystemd(podPath) {
		pod, err = systemdManager(podPath, nil)
	}
	if err != nil {
		return err
	}
	// Whatever is still in the pod's tree (its pause and containers are
	// gone by now) would keep the directories busy: killed at once.
	if dir := pod.Path(""); dir != "" {
		if _, err := killTree(dir, 10*time.Second); err != nil {
			return fmt.Errorf("remove pod cgroup %s: %w", podPath, err)
		}
	}
	if err := pod.Destroy(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pod cgroup %s: %w", podPath, err)
	}
	if dir := pod.Path(""); dir != "" {
		forgetSlice(dir)
	}
	return nil
}

// Paths returns the absolute directories of a cgroupfs path: one per v1
// controller, or the unified one under the key "". An OCI cgroupsPath in
// the systemd form (what an external runtime is given under the systemd
// driver) is first turned into its scope's cgroupfs path: read as a
// cgroupfs path it named a directory that does not exist, and the
// container had no stats and no OOM record.
func Paths(cgroupPath string) (map[string]string, error) {
	if IsSystemdCgroupsPath(cgroupPath) {
		p, err := SystemdScopePath(cgroupPath)
		if err != nil {
			return nil, err
		}
		cgroupPath = p
	}
	m, err := podManager(cgroupPath, nil)
	if err != nil {
		return nil, err
	}
	return m.GetPaths(), nil
}

func podManager(cgroupPath string, res *specs.LinuxResources) (ocgroups.Manager, error) {
	cg, err := libcontainerCgroup(cgroupPath, res)
	if err != nil {
		return nil, fmt.Errorf("pod cgroup %s: %w", cgroupPath, err)
	}
	m, err := manager.New(cg)
	if err != nil {
		return nil, fmt.Errorf("pod cgroup %s: %w", cgroupPath, err)
	}
	return m, nil
}

// limitsOf are the resources a manager was made with, to Set them.
func limitsOf(m ocgroups.Manager) *ocgroups.Resources {
	cg, err := m.GetCgroups()
	if err != nil || cg.Resources == nil {
		return &ocgroups.Resources{SkipDevices: true}
	}
	return cg.Resources
}

// exists reports whether the cgroup is there. Manager.Exists looks at the
// devices controller on v1, which pod cgroups leave alone.
func exists(m ocgroups.Manager) bool {
	for _, p := range m.GetPaths() {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}
