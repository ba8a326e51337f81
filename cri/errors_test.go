package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/sandbox"
)

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("pod x: %w", sandbox.ErrNotFound), codes.NotFound},
		{fmt.Errorf("image y: %w", image.ErrNotFound), codes.NotFound},
		{fmt.Errorf("name: %w", sandbox.ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("bad: %w", sandbox.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("not running: %w", sandbox.ErrFailedPrecondition), codes.FailedPrecondition},
		{fmt.Errorf("create container x: NRI CreateContainer: plugin said no: %w", sandbox.ErrPluginRefused), codes.FailedPrecondition},
		{fmt.Errorf("exec: %w", sandbox.ErrDeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("pull a: %w", image.ErrUnauthorized), codes.Unauthenticated},
		{fmt.Errorf("pull b: %w", image.ErrRegistryUnavailable), codes.Unavailable},
		{fmt.Errorf("pull c: %w", image.ErrCorrupt), codes.DataLoss},
		{fmt.Errorf("pull d: %w", image.ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("pull d: %w", image.ErrTooManyLayers), codes.InvalidArgument},
		{fmt.Errorf("checkpoint container x: %w", checkpoint.ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("pull e: %w", image.ErrPullStalled), codes.DeadlineExceeded},
		{fmt.Errorf("pause: %w", os.ErrDeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("remove pod: %w", sandbox.ErrInternal), codes.Internal},
		{context.Canceled, codes.Canceled},
		{errors.New("disk on fire"), codes.Unknown},
		{status.Error(codes.Unavailable, "as is"), codes.Unavailable},
	} {
		got := toStatus(tc.err)
		if status.Code(got) != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, status.Code(got), tc.want)
		}
		if s, _ := status.FromError(got); s.Message() != tc.err.Error() && status.Code(tc.err) == codes.Unknown {
			t.Errorf("message %q lost the error text %q", s.Message(), tc.err)
		}
	}
}

func TestCRIImageUser(t *testing.T) {
	for _, tc := range []struct {
		user     string
		uid      int64
		hasUID   bool
		username string
	}{
		{"1002", 1002, true, ""},
		{"www-data", 0, false, "www-data"},
		{"1003:1004", 1003, true, ""},
		{"www-data:1004", 0, false, "www-data"},
		{"", 0, false, ""},
	} {
		img := criImage(&image.Image{ID: "sha256:x", User: tc.user})
		if (img.Uid != nil) != tc.hasUID || img.GetUid().GetValue() != tc.uid || img.Username != tc.username {
			t.Errorf("user %q: uid %v username %q", tc.user, img.Uid, img.Username)
		}
	}
}

func TestDecodeBasicAuth(t *testing.T) {
	if u, p := decodeBasicAuth("dXNlcjpwYTpzcw=="); u != "user" || p != "pa:ss" {
		t.Errorf("got %q %q", u, p)
	}
	if u, _ := decodeBasicAuth("%%%"); u != "" {
		t.Errorf("garbage decoded to %q", u)
	}
}

func TestMatchLabels(t *testing.T) {
	labels := map[string]string{"a": "1", "b": "2"}
	if !matchLabels(labels, nil) || !matchLabels(labels, map[string]string{"a": "1"}) ||
		matchLabels(labels, map[string]string{"a": "2"}) || matchLabels(labels, map[string]string{"c": "1"}) {
		t.Error("label matching wrong")
	}
}

// A policy refusal reaches the kubelet as CRI-O sends it: code Unknown, the
// message led by "SignatureValidationFailed" (images.evalCRIPullErr), the
// image and rule kept.
func TestToStatusSignatureRejected(t *testing.T) {
	err := fmt.Errorf("%w: image %q refused by /etc/p.json, rule default (reject): Running image is rejected by policy.",
		image.ErrSignatureRejected, "quay.io/x/y:1")
	got := toStatus(err)
	s, _ := status.FromError(got)
	if s.Code() != codes.Unknown {
		t.Errorf("code %v, want Unknown", s.Code())
	}
	want := "SignatureValidationFailed: " + err.Error()
	if s.Message() != want {
		t.Errorf("message %q, want %q", s.Message(), want)
	}
}
