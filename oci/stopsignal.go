package oci

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The stop signal is the part of an image's config that applies outside
// the OCI process spec (its volumes are made by sandbox/hostfs).

// StopSignalName picks the signal StopContainer sends first: the
// container config's (kubelet's ContainerStopSignals), else the image's
// STOPSIGNAL, else SIGTERM. It is resolved once at create so a stop after
// a daemon restart sends the same signal.
func StopSignalName(cfg *runtimeapi.ContainerConfig, img Image) (string, error) {
	if s := cfg.GetStopSignal(); s != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		return strings.TrimPrefix(s.String(), "SIGNAL_"), nil
	}
	if img.StopSignal == "" {
		return "SIGTERM", nil
	}
	sig, err := parseSignal(img.StopSignal)
	if err != nil {
		return "", fmt.Errorf("image %s STOPSIGNAL: %w", img.ID, err)
	}
	return unix.SignalName(sig), nil
}

// parseSignal reads a signal as images write it: "SIGQUIT", "QUIT" or "3".
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal number %d out of range: %w", n, ErrInvalidArgument)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, ErrInvalidArgument)
}
