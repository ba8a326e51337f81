package cri

import (
	"context"
	"errors"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/sandbox"
)

// toStatus maps domain errors to gRPC codes; the message keeps the whole
// wrapped chain so a person can act on it.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, sandbox.ErrNotFound), errors.Is(err, image.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, sandbox.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, sandbox.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, sandbox.ErrFailedPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, image.ErrUnauthorized):
		code = codes.Unauthenticated
	case errors.Is(err, image.ErrRegistryUnavailable):
		code = codes.Unavailable
	case errors.Is(err, image.ErrCorrupt):
		code = codes.DataLoss
	case errors.Is(err, image.ErrNoSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, sandbox.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, image.ErrPullStalled):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, sandbox.ErrInternal):
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}

// invalid is a shorthand for request validation failures in handlers.
func invalid(msg string) error { return status.Error(codes.InvalidArgument, msg) }
