package sandbox

import (
	"fmt"
	"os"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/peapod-cri/peapod/sandbox/execcg"
)

// execHandle is what every exec into one running container reuses: a
// libcontainer handle of its own, the container's OCI spec (its process
// template) and, on cgroup v1, the list of cgroups the exec'd process joins
// by itself (package execcg).
type execHandle struct {
	lc     *libcontainer.Container
	spec   *specs.Spec
	cgList *os.File // nil: libcontainer moves the process (cgroup v2)
	// unified is the container's cgroup in a hybrid host's v2 hierarchy,
	// which the process joins right after it started (see Exec).
	unified string
}

func (h *execHandle) close() {
	if h != nil && h.cgList != nil {
		h.cgList.Close()
	}
}

// execHandleOf returns the container's exec handle, made on first use.
// The caller holds c.mu.
func (r *Runtime) execHandleOf(c *container) (*execHandle, error) {
	if c.exec != nil {
		return c.exec, nil
	}
	spec, err := readSpec(c.Bundle)
	if err != nil {
		return nil, err
	}
	// A handle separate from c.lc: on cgroup v1 its cgroup manager is
	// emptied below, so it must serve nothing but exec.
	lc, err := libcontainer.Load(libcontainerRoot(r.opts.State), c.ID)
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", c.ID, err)
	}
	h := &execHandle{lc: lc, spec: spec}
	if !cgroups.IsCgroup2UnifiedMode() {
		st, err := lc.State()
		if err != nil {
			return nil, fmt.Errorf("container %s state: %w", c.ID, err)
		}
		list, unified, err := execcg.ListFile(st.CgroupPaths)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID, err)
		}
		// libcontainer writes the exec's PID to cgroup.procs of every path
		// its manager holds (the slow write execcg avoids); State returns
		// the manager's own map, so emptying it leaves the move to the
		// process. Should a libcontainer version return a copy, the
		// process is moved twice: slower, still correct.
		clear(st.CgroupPaths)
		h.cgList, h.unified = list, unified
	}
	c.exec = h
	return h, nil
}
