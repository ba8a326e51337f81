package cri

import (
	"context"
	"errors"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	crierrors "k8s.io/cri-api/pkg/errors"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/sandbox"
	"github.com/peapod-cri/peapod/sandbox/names"
)

// toStatus maps domain errors to gRPC codes; the message keeps the whole
// wrapped chain so a person can act on it.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, image.ErrSignatureRejected) {
		// What the kubelet recognises (images.evalCRIPullErr): code Unknown
		// and a message that starts "SignatureValidationFailed", as CRI-O
		// sends; the pod then shows reason SignatureValidationFailed
		// rather than ErrImagePull.
		msg := err.Error()
		if !strings.HasPrefix(msg, crierrors.ErrSignatureValidationFailed.Error()) {
			msg = crierrors.ErrSignatureValidationFailed.Error() + ": " + msg
		}
		return status.Error(codes.Unknown, msg)
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, sandbox.ErrNotFound), errors.Is(err, names.ErrUnknown), errors.Is(err, image.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, sandbox.ErrAlreadyExists), errors.Is(err, names.ErrInUse):
		code = codes.AlreadyExists
	case errors.Is(err, sandbox.ErrInvalidArgument), errors.Is(err, names.ErrBadQuery), errors.Is(err, image.ErrTooManyLayers),
		errors.Is(err, checkpoint.ErrInvalidArchive), errors.Is(err, checkpoint.ErrPrivileges):
		code = codes.InvalidArgument
	case errors.Is(err, sandbox.ErrFailedPrecondition), errors.Is(err, image.ErrInUse),
		errors.Is(err, sandbox.ErrPluginRefused): // an NRI plugin's policy: the node, not the request
		code = codes.FailedPrecondition
	case errors.Is(err, sandbox.ErrUnimplemented):
		code = codes.Unimplemented
	case errors.Is(err, image.ErrUnauthorized):
		code = codes.Unauthenticated
	case errors.Is(err, image.ErrRegistryUnavailable):
		code = codes.Unavailable
	case errors.Is(err, image.ErrCorrupt):
		code = codes.DataLoss
	case errors.Is(err, image.ErrNoSpace), errors.Is(err, checkpoint.ErrNoSpace):
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
