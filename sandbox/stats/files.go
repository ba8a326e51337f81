package stats

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FileCounts are the open files of a cgroup's processes, for cAdvisor's
// container_file_descriptors, container_sockets and container_ulimits_soft.
type FileCounts struct {
	FDs, Sockets uint64
	// NoFileSoft is the soft RLIMIT_NOFILE of the cgroup's first process
	// (cAdvisor reads its container's init); 0 when unknown.
	NoFileSoft uint64
}

// CountFiles counts the file descriptors and sockets of the given
// processes. A process that exits meanwhile is left out.
func CountFiles(pids []int) FileCounts {
	var c FileCounts
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		c.FDs += uint64(len(ents))
		for _, e := range ents {
			if l, err := os.Readlink(dir + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
				c.Sockets++
			}
		}
	}
	if len(pids) > 0 {
		c.NoFileSoft = softNoFile(pids[0])
	}
	return c
}

// softNoFile reads "Max open files" from /proc/PID/limits.
func softNoFile(pid int) uint64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "Max open files")
		if !ok {
			continue
		}
		if fields := strings.Fields(rest); len(fields) > 0 {
			v, _ := strconv.ParseUint(fields[0], 10, 64) // "unlimited" gives 0
			return v
		}
	}
	return 0
}

// FSInfo is the size of the filesystem a writable layer lives on.
type FSInfo struct {
	Device             string // its source, as /proc/self/mountinfo names it
	Limit              uint64 // bytes
	Inodes, InodesFree uint64
}

// Filesystem reads the size of the filesystem mounted at mountpoint.
func Filesystem(mountpoint string) (FSInfo, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return FSInfo{}, err
	}
	return FSInfo{Device: mountSource(mountpoint), Limit: st.Blocks * uint64(st.Bsize), Inodes: st.Files, InodesFree: st.Ffree}, nil
}

// mountSource is the source of the mount at or above path (the longest
// mount point that is a prefix of it), or path itself when unknown.
func mountSource(path string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return path
	}
	defer f.Close()
	best, src := "", path
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			continue
		}
		mp := fields[4]
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, src = mp, tail[1]
		}
	}
	return src
}

// BlockDevice names a block device by number ("/dev/sda"), as cAdvisor's
// device label does; "MAJ:MIN" when sysfs does not know it.
func BlockDevice(major, minor uint64) string {
	id := strconv.FormatUint(major, 10) + ":" + strconv.FormatUint(minor, 10)
	data, err := os.ReadFile("/sys/dev/block/" + id + "/uevent")
	if err != nil {
		return id
	}
	for _, l := range strings.Split(string(data), "\n") {
		if name, ok := strings.CutPrefix(l, "DEVNAME="); ok {
			return "/dev/" + name
		}
	}
	return id
}
