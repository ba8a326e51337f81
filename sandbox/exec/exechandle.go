package exec

import (
	"fmt"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/peapod-cri/peapod/sandbox/ociruntime"
)

// Target is what every exec into one running container reuses instead
// of loading it again: a libcontainer handle of its own (so that an exec's
// start does not wait for a Signal or an update on another handle, nor
// they for it), the C helper's plan and
// the container's OCI spec, the exec's process template.
type Target struct {
	lc   *libcontainer.Container
	spec *specs.Spec
	fast *fastPlan // for the C exec helper (fastexec.go); nil: libcontainer only

	// An external OCI runtime's container (ociexec.go): lc and fast are nil.
	oci   *ociruntime.Runtime
	ociID string
}

// Load makes the Target of running container id, whose spec is spec.
func (e *Executor) Load(id string, spec *specs.Spec) (*Target, error) {
	lc, err := libcontainer.Load(e.root, id)
	if err != nil {
		return nil, fmt.Errorf("load container %s: %w", id, err)
	}
	fast, why := planFastExec(lc, spec)
	if fast == nil {
		e.log.Debug("execs go through libcontainer", "container", id, "reason", why)
	}
	return &Target{lc: lc, spec: spec, fast: fast}, nil
}
