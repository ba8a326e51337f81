package sandbox

import (
	"errors"

	"github.com/peapod-cri/peapod/oci"
)

// Sentinel errors of the domain. cri/ maps each to one gRPC code; wrap them
// with what was being done and to what.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = oci.ErrInvalidArgument // one value, so the spec's errors map as ours
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
	// ErrUnimplemented: a request asks for a feature peapod has not built
	// (the message names it), as opposed to a request that is wrong.
	ErrUnimplemented = oci.ErrUnimplemented
)
