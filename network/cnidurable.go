package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Plugins write their records without fsync: Debian's host-local creates
// one file per IP and writes the owner into it, libcni writes its cache the
// same way. A power cut soon after an ADD brings such a file back empty
// (ext4 delayed allocation), and an empty host-local file names no owner:
// no DEL can ever release that IP (seen in make test-powercut). peapod
// therefore syncs the filesystems of these records after every ADD, and at
// start removes host-local files a power cut emptied.

// defaultHostLocalDir is host-local's dataDir when its config names none.
const defaultHostLocalDir = "/var/lib/cni/networks"

// hostLocalDirs are the directories where the network's host-local IPAM
// keeps its allocations (<dataDir>/<network name>).
func (c *CNI) hostLocalDirs() []string {
	var dirs []string
	for _, p := range c.list.Plugins {
		var conf struct {
			IPAM struct {
				Type    string `json:"type"`
				DataDir string `json:"dataDir"`
			} `json:"ipam"`
		}
		if json.Unmarshal(p.Bytes, &conf) != nil || conf.IPAM.Type != "host-local" {
			continue
		}
		dir := conf.IPAM.DataDir
		if dir == "" {
			dir = defaultHostLocalDir
		}
		dirs = append(dirs, filepath.Join(dir, c.list.Name))
	}
	return dirs
}

// syncRecords flushes the filesystems holding libcni's cache and the
// host-local allocations, each once: an ADD acknowledged to the kubelet
// survives a power cut.
func (c *CNI) syncRecords() error {
	seen := map[uint64]bool{}
	for _, dir := range append([]string{c.cacheDir}, c.hostLocalDirs()...) {
		if dir == "" {
			continue
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %s to sync it: %w", dir, err)
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		if err == nil && !seen[st.Dev] {
			seen[st.Dev] = true
			err = unix.Syncfs(fd)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("sync the filesystem of %s: %w", dir, err)
		}
	}
	return nil
}

// removeEmptiedAllocations removes the host-local allocation files that are
// empty and older than this boot: a power cut emptied them, and with no
// owner written in them no DEL can release their IP. A file of this boot
// may be an ADD in progress; it is left alone.
func (c *CNI) removeEmptiedAllocations() (removed []string, err error) {
	boot, err := bootTime()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, dir := range c.hostLocalDirs() {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range ents {
			if net.ParseIP(e.Name()) == nil || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if err != nil || fi.Size() != 0 || !fi.ModTime().Before(boot) {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove emptied allocation %s: %w", p, err))
				continue
			}
			removed = append(removed, p)
		}
	}
	return removed, errors.Join(errs...)
}

// bootTime reads the kernel's boot time (btime of /proc/stat).
func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("/proc/stat btime %q: %w", v, err)
			}
			return time.Unix(s, 0), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat has no btime")
}
