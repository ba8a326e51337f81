package oci

import "errors"

// ErrInvalidArgument marks a request the spec cannot be built from: a bad
// field, or one the host cannot honour. package sandbox's
// ErrInvalidArgument is this same value, so cri/errors.go maps both.
var ErrInvalidArgument = errors.New("invalid argument")

// ErrUnimplemented marks a request for a feature peapod has not built (the
// message names it), as opposed to a request that is wrong. package
// sandbox's ErrUnimplemented is this same value.
var ErrUnimplemented = errors.New("not implemented")
