package cgroups

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// What a pod whose record is gone (moved aside as unreadable, or never
// written) still holds is found from what exists, not from the record:
// its keeper process (sandbox's killOrphanKeepers) leads to the pod's cgroup in
// every hierarchy (the keeper sits in the pod's pause leaf), and the
// records of its containers lead to their bundles and root filesystems.

// PodDirsOf returns the directories of the pod cgroup that process
// pid sits in (through its pause leaf), one per mounted hierarchy; none if
// pid is not in a pause leaf of a peapod pod cgroup. In a hierarchy where
// the pause was not moved (devices: the pod's cgroup there only holds its
// containers'), the pod's directory is looked for below the process's own
// cgroup, by the pod path's tail known from the other hierarchies.
func PodDirsOf(pid int) []string {
	mounts := hierarchies()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil
	}
	type line struct{ ctrls, path string }
	var lines []line
	var known []string // pod paths from hierarchies where pid is in the pause leaf
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		lines = append(lines, line{parts[1], parts[2]})
		if isPauseLeaf(parts[2]) {
			pod := filepath.Dir(parts[2])
			if b := filepath.Base(pod); strings.HasPrefix(b, "peapod-pod-") || strings.Contains(b, "peapod_pod_") {
				known = append(known, pod)
			}
		}
	}
	if len(known) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var dirs []string
	add := func(m mount, cgPath string) bool {
		if !strings.HasPrefix(cgPath, m.root) {
			return false
		}
		dir := filepath.Join(m.point, strings.TrimPrefix(cgPath, m.root))
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() {
			return false
		}
		if real, err := filepath.EvalSymlinks(dir); err == nil && !seen[real] {
			seen[real] = true
			dirs = append(dirs, real)
		}
		return true
	}
	for _, l := range lines {
		for _, m := range mounts {
			if !m.serves(l.ctrls) {
				continue
			}
			if isPauseLeaf(l.path) {
				add(m, filepath.Dir(l.path))
				continue
			}
			// Longest tail first: <own cgroup>/<parent...>/<pod>.
			comps := strings.Split(strings.Trim(known[0], "/"), "/")
			for i := 0; i < len(comps); i++ {
				if add(m, filepath.Join(l.path, filepath.Join(comps[i:]...))) {
					break
				}
			}
		}
	}
	return dirs
}

type mount struct {
	point, root string
	v2          bool
	opts        map[string]bool // v1: controllers and name=...
}

// serves tells whether the mount is the hierarchy of a /proc/PID/cgroup
// line's controller field ("" is the v2 hierarchy).
func (m mount) serves(ctrls string) bool {
	if ctrls == "" {
		return m.v2
	}
	if m.v2 {
		return false
	}
	for _, c := range strings.Split(ctrls, ",") {
		if !m.opts[c] {
			return false
		}
	}
	return true
}

func hierarchies() []mount {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mount
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		pre, post, ok := strings.Cut(string(line), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		m := mount{point: pf[4], root: pf[3], v2: qf[0] == "cgroup2", opts: map[string]bool{}}
		for _, o := range strings.Split(qf[2], ",") {
			m.opts[o] = true
		}
		out = append(out, m)
	}
	return out
}

// RemoveTrees kills every process left in the trees (a container of
// a pod without a PID namespace outlives its keeper) and removes their
// directories, deepest first.
func RemoveTrees(dirs []string) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, dir := range dirs {
		killTree(dir, 10*time.Second) // v2: at once; what is left is killed below
	}
	for {
		left := 0
		for _, dir := range dirs {
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(procs)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
						unix.Kill(pid, unix.SIGKILL)
						left++
					}
				}
				return nil
			})
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still in %v", left, dirs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var firstErr error
	for _, dir := range dirs {
		var all []string
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := unix.Rmdir(all[i]); err != nil && err != unix.ENOENT && firstErr == nil {
				firstErr = fmt.Errorf("remove cgroup %s: %w", all[i], err)
			}
		}
	}
	return firstErr
}

// isPauseLeaf reports whether cgroup path p is a pod's pause leaf: "pause"
// (cgroupfs), "peapod-pause.scope" (emulated systemd) or the pause scope a
// live systemd made (cri-peapod-<pod id>.scope in the pod's slice).
func isPauseLeaf(p string) bool {
	b := filepath.Base(p)
	return b == pauseLeaf || b == pauseScope || pauseUnitPath(filepath.Dir(p)) == p && strings.Contains(filepath.Base(filepath.Dir(p)), podComponent)
}
