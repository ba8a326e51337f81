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
// a daemon restart sends the same signal. The name is canonical ("SIGABRT"
// for the enum's SIGIOT, "SIGRTMIN+3" for SIGRTMINPLUS3): ParseSignal reads
// it back at stop.
func StopSignalName(cfg *runtimeapi.ContainerConfig, img Image) (string, error) {
	if s := cfg.GetStopSignal(); s != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		name, ok := runtimeapi.Signal_name[int32(s)]
		if !ok {
			return "", fmt.Errorf("stop signal %d is not a CRI signal: %w", s, ErrInvalidArgument)
		}
		// cri-api 0.37 renamed the values SIGNAL_<name>; the RT ones spell
		// the offset out (SIGRTMINPLUS3, SIGRTMAXMINUS2).
		name = strings.TrimPrefix(name, "SIGNAL_")
		name = strings.Replace(name, "RTMINPLUS", "RTMIN+", 1)
		name = strings.Replace(name, "RTMAXMINUS", "RTMAX-", 1)
		sig, err := ParseSignal(name)
		if err != nil {
			return "", fmt.Errorf("stop signal %s: %w", s, err)
		}
		return SignalName(sig), nil
	}
	if img.StopSignal == "" {
		return "SIGTERM", nil
	}
	sig, err := ParseSignal(img.StopSignal)
	if err != nil {
		return "", fmt.Errorf("image %s STOPSIGNAL: %w", img.ID, err)
	}
	return SignalName(sig), nil
}

// The real-time signals as the C library numbers them (glibc keeps 32 and
// 33 for itself), which is how Docker, containerd and CRI-O read
// "SIGRTMIN+n" in images.
const (
	sigRTMin = 34
	sigRTMax = 64
)

// aliases are Linux's second names of signals, which the CRI enum lists.
var aliases = map[string]string{"SIGCLD": "SIGCHLD", "SIGPOLL": "SIGIO", "SIGIOT": "SIGABRT"}

// ParseSignal reads a signal as images write it: "SIGQUIT", "QUIT", "3",
// "SIGRTMIN+3" or "RTMAX-1".
func ParseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > sigRTMax {
			return 0, fmt.Errorf("signal number %d out of range: %w", n, ErrInvalidArgument)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if a, ok := aliases[name]; ok {
		name = a
	}
	for _, rt := range []struct {
		prefix string
		base   int
		sign   int
	}{{"SIGRTMIN", sigRTMin, 1}, {"SIGRTMAX", sigRTMax, -1}} {
		rest, ok := strings.CutPrefix(name, rt.prefix)
		if !ok {
			continue
		}
		off := 0
		if rest != "" {
			op := "+"
			if rt.sign < 0 {
				op = "-"
			}
			n, err := strconv.Atoi(strings.TrimPrefix(rest, op))
			if !strings.HasPrefix(rest, op) || err != nil || n < 0 {
				return 0, fmt.Errorf("unknown signal %q: %w", s, ErrInvalidArgument)
			}
			off = n
		}
		if sig := rt.base + rt.sign*off; sig >= sigRTMin && sig <= sigRTMax {
			return unix.Signal(sig), nil
		}
		return 0, fmt.Errorf("signal %q out of range: %w", s, ErrInvalidArgument)
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, ErrInvalidArgument)
}

// SignalName is the canonical name of a signal: unix.SignalName's, and for
// the real-time ones SIGRTMIN+n (up to +15) or SIGRTMAX-n, as the CRI enum
// divides them.
func SignalName(sig unix.Signal) string {
	switch {
	case sig == sigRTMin:
		return "SIGRTMIN"
	case sig > sigRTMin && sig <= sigRTMin+15:
		return "SIGRTMIN+" + strconv.Itoa(int(sig)-sigRTMin)
	case sig > sigRTMin+15 && sig < sigRTMax:
		return "SIGRTMAX-" + strconv.Itoa(sigRTMax-int(sig))
	case sig == sigRTMax:
		return "SIGRTMAX"
	}
	return unix.SignalName(sig)
}

// SignalEnum is the CRI enum value of a canonical signal name (what
// ContainerStatus.stop_signal reports); RUNTIME_DEFAULT when unknown.
func SignalEnum(name string) runtimeapi.Signal {
	name = strings.Replace(name, "RTMIN+", "RTMINPLUS", 1)
	name = strings.Replace(name, "RTMAX-", "RTMAXMINUS", 1)
	return runtimeapi.Signal(runtimeapi.Signal_value["SIGNAL_"+name])
}
