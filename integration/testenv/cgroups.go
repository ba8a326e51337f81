package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// cgroupMounts maps each mounted hierarchy's controller (its first
// controller or name=…; "" for v2) to its mount point.
func cgroupMounts() map[string]string {
	mounts := map[string]string{}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, pf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(pf) < 3 {
			continue
		}
		switch pf[0] {
		case "cgroup2":
			mounts[""] = f[4]
		case "cgroup":
			for _, opt := range strings.Split(pf[2], ",") {
				mounts[opt] = f[4]
			}
		}
	}
	return mounts
}

// CgroupHierarchies lists the mount points of the host's cgroup
// hierarchies (v1 controllers and named ones; on v2, the one mount).
func CgroupHierarchies() []string {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, pf := strings.Fields(pre), strings.Fields(post)
		if len(f) > 4 && len(pf) > 0 && (pf[0] == "cgroup" || pf[0] == "cgroup2") && f[3] == "/" {
			out = append(out, f[4])
		}
	}
	return out
}

// CgroupDirs returns the directory of cgroup path p in every hierarchy this
// process is in: an absolute p from the hierarchy's root (as the kubelet's
// cgroup parents), a relative one from this process's own cgroup there,
// where a daemon the test started nests a relative cgroup parent. "" is
// this process's own cgroups.
func CgroupDirs(p string) []string {
	mounts := cgroupMounts()
	own, _ := os.ReadFile("/proc/self/cgroup")
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		mnt, ok := mounts[strings.Split(parts[1], ",")[0]]
		if !ok {
			continue
		}
		if filepath.IsAbs(p) {
			out = append(out, filepath.Join(mnt, p))
		} else {
			out = append(out, filepath.Join(mnt, parts[2], p))
		}
	}
	return out
}

// RemoveCgroup removes cgroup path p (as CgroupDirs resolves it) and every
// cgroup below it, deepest first, in every hierarchy. It returns the
// cgroups that were below p, which a test that expects the daemon to have
// cleaned up reports. A cgroup that still holds a process stays.
func RemoveCgroup(p string) (below []string) {
	for _, root := range CgroupDirs(p) {
		var dirs []string
		filepath.WalkDir(root, func(d string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, d)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // children first
			if dirs[i] != root {
				below = append(below, dirs[i])
			}
			syscall.Rmdir(dirs[i])
		}
	}
	return below
}
