package image

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"go.podman.io/image/v5/docker"
)

// Sentinel errors. Pull errors wrap exactly one of them (cri/errors.go maps
// each to its own gRPC code), after the reference and the cause.
var (
	// ErrNotFound: the image is not in the store, or the registry has no
	// such repository, tag or digest.
	ErrNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials (or asked for
	// some and none were given).
	ErrUnauthorized = errors.New("registry refused the credentials")
	// ErrRegistryUnavailable: the registry host cannot be resolved or
	// reached.
	ErrRegistryUnavailable = errors.New("registry unreachable")
	// ErrCorrupt: a blob's content does not match its digest.
	ErrCorrupt = errors.New("image content does not match its digest")
	// ErrNoSpace: the image store's filesystem is full.
	ErrNoSpace = errors.New("no space left on the image filesystem")
	// ErrPullStalled: no bytes came from the registry for
	// pull_progress_timeout while a transfer was open.
	ErrPullStalled = errors.New("pull made no progress")
	// ErrInUse: the image is the root filesystem of a container that still
	// exists, so it cannot be removed until that container is.
	ErrInUse = errors.New("image in use by a container")
	// ErrSignatureRejected: the signature policy (signature_policy) does
	// not accept the image: unsigned, badly signed, or a reject rule.
	ErrSignatureRejected = errors.New("image rejected by the signature policy")
	// ErrTooManyLayers: the image has more layers than a root filesystem
	// can stack; it is refused before any is fetched.
	ErrTooManyLayers = errors.New("image has too many layers")
)

// classifyPullError wraps a copy error of ref with the sentinel that says
// what went wrong. The order matters: with mirrors, containers/image reports
// the primary location's error (often a network error on an offline node)
// with the mirrors' answers in its text, so the registry's own verdicts
// (not found, unauthorized) win over the network.
func classifyPullError(ref string, err error) error {
	msg := strings.ToLower(err.Error())
	wrap := func(sentinel error) error { return fmt.Errorf("pull %q: %w: %v", ref, sentinel, err) }
	switch {
	case errors.Is(err, ErrPullStalled), errors.Is(err, ErrSignatureRejected), errors.Is(err, ErrNotFound), errors.Is(err, ErrUnauthorized),
		errors.Is(err, ErrRegistryUnavailable), errors.Is(err, ErrCorrupt), errors.Is(err, ErrNoSpace), errors.Is(err, ErrTooManyLayers):
		return err
	case strings.Contains(msg, "digest did not match"), strings.Contains(msg, "does not match digest"),
		strings.Contains(msg, "digest mismatch"), strings.Contains(msg, "does not match expected"):
		return wrap(ErrCorrupt)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT),
		strings.Contains(msg, "no space left on device"), strings.Contains(msg, "disk quota exceeded"):
		return wrap(ErrNoSpace)
	case isUnauthorized(err, msg):
		return wrap(ErrUnauthorized)
	case isRegistryNotFound(msg):
		return fmt.Errorf("image %q: %w: %v", ref, ErrNotFound, err)
	case strings.Contains(msg, "server gave http response to https client"):
		// A plain-HTTP registry reached over HTTPS, its only way unless
		// registries_conf marks it insecure.
		return fmt.Errorf("pull %q: %w: %v (the registry speaks plain HTTP: mark it insecure = true in the registries_conf file)",
			ref, ErrRegistryUnavailable, err)
	case isUnreachable(err, msg):
		return wrap(ErrRegistryUnavailable)
	}
	return fmt.Errorf("pull %q: %w", ref, err)
}

func isUnauthorized(err error, msg string) bool {
	var ua docker.ErrUnauthorizedForCredentials
	if errors.As(err, &ua) {
		return true
	}
	for _, s := range []string{"unauthorized", "authentication required", "invalid username/password", "access to the resource is denied"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// isRegistryNotFound tells whether a copy error means the registry (or every
// mirror) answered that the repository or manifest does not exist. With
// mirrors, c/image wraps only the primary location's error (which may be a
// network error offline), so the mirrors' answers are matched in the text.
func isRegistryNotFound(msg string) bool {
	for _, s := range []string{"manifest unknown", "name unknown", "repository name not known", "not found"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func isUnreachable(err error, msg string) bool {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	for _, s := range []string{"no such host", "connection refused", "no route to host", "network is unreachable",
		"i/o timeout", "server misbehaving", "connection reset"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
