package cgroups

import (
	"context"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	systemdDbus "github.com/coreos/go-systemd/v22/dbus"
	ocgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/systemd"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// With a running systemd, the systemd driver asks systemd over D-Bus for
// every unit (as runc/containerd/CRI-O do with SystemdCgroup): the pod is a
// transient slice, the pause and each container a transient scope, limits
// are unit properties, and removal stops the unit. systemd owns that part of
// the tree then; writing its directories behind its back would be undone at
// its next reload. Without systemd (the lab host, most tests), the same
// names are made as cgroupfs directories ("emulated").
//
// The unit names (ScopePrefix as containerd's "cri-containerd"):
//
//	<kubelet slice>-peapod_pod_<pod id>.slice   the pod (resources + overhead)
//	cri-peapod-<pod id>.scope                   its pause and namespace holder
//	cri-peapod-<container id>.scope             each container
const ScopePrefix = "cri-peapod"

var (
	liveOnce sync.Once
	live     bool
	liveWhy  string
)

// SystemdLive reports whether systemd is running and its manager answers
// on the system bus: then the systemd driver goes through D-Bus. Probed
// once per process; SystemdStatus says what was found.
func SystemdLive() bool {
	liveOnce.Do(func() { live, liveWhy = probeSystemd() })
	return live
}

// SystemdStatus says how the systemd driver places cgroups here, for the
// daemon's start-up log and its verbose status.
func SystemdStatus() string {
	SystemdLive()
	return liveWhy
}

func probeSystemd() (bool, string) {
	if !systemd.IsRunningSystemd() {
		return false, "systemd is not running (no /run/systemd/system): slices and scopes are emulated as cgroupfs directories"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := systemdDbus.NewWithContext(ctx)
	if err != nil {
		return false, fmt.Sprintf("systemd runs but its D-Bus API does not answer (%v): slices and scopes are emulated as cgroupfs directories", err)
	}
	defer conn.Close()
	v, err := conn.GetManagerProperty("Version")
	if err != nil {
		return false, fmt.Sprintf("systemd runs but its manager does not answer on D-Bus (%v): slices and scopes are emulated as cgroupfs directories", err)
	}
	return true, fmt.Sprintf("systemd %s on D-Bus: pod slices and container scopes are transient units", strings.Trim(v, `"`))
}

// viaSystemd reports whether the pod cgroup at cgroupfs path podPath is
// systemd's to make: a slice (the systemd driver) under a live systemd.
func viaSystemd(podPath string) bool {
	return IsSystemdSlice(podPath) && SystemdLive()
}

// unitOf is the libcontainer cgroup config of the unit whose cgroupfs path
// is p: its parent slice and its name (a slice's full name, or a scope's
// ScopePrefix-<Name>).
func unitOf(p string, res *specs.LinuxResources) (*ocgroups.Cgroup, error) {
	parent := path.Base(path.Dir(p))
	if parent == "/" {
		parent = "-.slice"
	}
	name := path.Base(p)
	cg, err := libcontainerCgroup("", res)
	if err != nil {
		return nil, err
	}
	cg.Path = ""
	cg.Systemd = true
	cg.Parent = parent
	if strings.HasSuffix(name, ".scope") {
		id, ok := strings.CutPrefix(strings.TrimSuffix(name, ".scope"), ScopePrefix+"-")
		if !ok {
			return nil, fmt.Errorf("scope %s is not peapod's (%s-<id>.scope)", name, ScopePrefix)
		}
		cg.ScopePrefix, cg.Name = ScopePrefix, id
	} else {
		cg.Name = name
	}
	return cg, nil
}

// systemdManager is libcontainer's systemd (D-Bus) manager of the unit at
// cgroupfs path p.
func systemdManager(p string, res *specs.LinuxResources) (ocgroups.Manager, error) {
	cg, err := unitOf(p, res)
	if err != nil {
		return nil, fmt.Errorf("systemd unit for %s: %w", p, err)
	}
	var m ocgroups.Manager
	if ocgroups.IsCgroup2UnifiedMode() {
		m, err = systemd.NewUnifiedManager(cg, "")
	} else {
		m, err = systemd.NewLegacyManager(cg, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("systemd unit for %s: %w", p, err)
	}
	return m, nil
}

// ContainerCgroupsPath is the OCI cgroupsPath of a container whose pod's
// cgroup is podPath: under a live systemd runc's "slice:prefix:name" form
// (the runner then uses libcontainer's systemd manager), else the cgroupfs
// path ContainerPath gives.
func ContainerCgroupsPath(podPath, containerID string) string {
	if viaSystemd(podPath) {
		return path.Base(podPath) + ":" + ScopePrefix + ":" + containerID
	}
	return ContainerPath(podPath, containerID)
}

// IsSystemdCgroupsPath reports whether an OCI cgroupsPath is in runc's
// systemd form "slice:prefix:name".
func IsSystemdCgroupsPath(p string) bool {
	return !strings.Contains(p, "/") && strings.Count(p, ":") == 2
}

// SystemdScopePath is the cgroupfs path systemd gives the unit of an OCI
// cgroupsPath "slice:prefix:name", as runc and crun create it: the scope
// prefix-name.scope (or name itself when it is a slice) below the slice's
// expansion. crun puts the init one level lower (its "container"
// sub-cgroup); the scope's files count it.
func SystemdScopePath(p string) (string, error) {
	f := strings.Split(p, ":")
	if len(f) != 3 || f[0] == "" || f[2] == "" {
		return "", fmt.Errorf("systemd cgroupsPath %q: want slice:prefix:name", p)
	}
	dir, err := SlicePath(f[0])
	if err != nil {
		return "", err
	}
	unit := f[1] + "-" + f[2] + ".scope"
	if strings.HasSuffix(f[2], ".slice") {
		unit = f[2]
	}
	return path.Join(dir, unit), nil
}

// pauseUnitPath is the cgroupfs path of the pod's pause scope under a live
// systemd. Unit names are global (one peapod-pause.scope per pod would
// clash), so the scope is named after the pod's ID, as containerd does.
func pauseUnitPath(podPath string) string {
	name := strings.TrimSuffix(path.Base(podPath), ".slice")
	if i := strings.LastIndex(name, podComponent); i >= 0 {
		name = name[i+len(podComponent):]
	}
	return path.Join(podPath, ScopePrefix+"-"+name+".scope")
}

// scopeOOMKills is 1 when systemd ended the scope unit because the kernel's
// OOM killer acted in it (its Result "oom-kill"; a scope's default
// OOMPolicy=stop ends it then), else 0. Asked before the container's
// libcontainer state is destroyed, which resets the failed unit.
func scopeOOMKills(unit string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := systemdDbus.NewWithContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("ask systemd about %s: %w", unit, err)
	}
	defer conn.Close()
	p, err := conn.GetUnitTypePropertyContext(ctx, unit, "Scope", "Result")
	if err != nil {
		return 0, fmt.Errorf("result of %s: %w", unit, err)
	}
	if r, _ := p.Value.Value().(string); r == "oom-kill" {
		return 1, nil
	}
	return 0, nil
}
