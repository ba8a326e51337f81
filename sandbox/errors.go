package sandbox

import "errors"

// Sentinel errors of the domain. cri/ maps each to one gRPC code; wrap them
// with what was being done and to what.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrDeadlineExceeded   = errors.New("deadline exceeded")
)
