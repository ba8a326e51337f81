package sandbox

import (
	"fmt"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// execHandle is what every exec into one running container reuses instead
// of loading it again: a libcontainer handle of its own (so that an exec's
// start does not wait for a Signal or Stats on c.lc, nor they for it) and
// the container's OCI spec, the exec's process template.
type execHandle struct {
	lc   *libcontainer.Container
	spec *specs.Spec
	fast *fastPlan // for the C exec helper (fastexec.go); nil: libcontainer only
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
	lc, err := libcontainer.Load(libcontainerRoot(r.opts.State), c.ID)
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", c.ID, err)
	}
	fast, why := planFastExec(lc)
	if fast == nil {
		r.log.Debug("execs go through libcontainer", "container", c.ID, "reason", why)
	}
	c.exec = &execHandle{lc: lc, spec: spec, fast: fast}
	return c.exec, nil
}
