package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// killTree ends every process in the cgroup v2 tree at dir at once through
// its cgroup.kill (kernel 5.14+), as runc does for a container without a
// PID namespace of its own: unlike a kill of each PID read from
// cgroup.procs, nothing forks out of reach between the read and the kill.
// It waits until cgroup.events says the tree is empty. ok is false where
// there is no cgroup.kill (cgroup v1, an older kernel): the caller kills
// the processes one by one.
func killTree(dir string, timeout time.Duration) (ok bool, err error) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil // no tree, or no cgroup.kill
		}
		return true, fmt.Errorf("kill the processes of cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		populated, err := readCounter(filepath.Join(dir, "cgroup.events"), "populated")
		if err != nil || populated == 0 {
			return true, nil // gone, or empty
		}
		if time.Now().After(deadline) {
			procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			return true, fmt.Errorf("cgroup %s not empty %v after cgroup.kill: %s", dir, timeout, strings.Fields(string(procs)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
