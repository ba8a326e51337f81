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
	// ErrInternal: a step of the runtime itself failed (files or records
	// that could not be removed). Errors are marked with internal(), which
	// keeps their message as it is.
	ErrInternal = errors.New("internal error")
)

// internalError marks an error as the runtime's own failure (ErrInternal)
// without changing its message.
type internalError struct{ error }

func (e internalError) Is(target error) bool { return target == ErrInternal }
func (e internalError) Unwrap() error        { return e.error }

func internal(err error) error {
	if err == nil {
		return nil
	}
	return internalError{err}
}
