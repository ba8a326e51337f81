package store

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// FailpointsEnv names the failpoints at which the daemon crashes on
// purpose, comma-separated, for tests of recovery (integration/crash_test.go).
// "name=hold:PATH" instead holds the step there until the file PATH exists
// or the operation is cancelled, for tests of races with a step in flight
// (integration/escape_image_test.go). Unset, as in every real deployment,
// no failpoint does anything.
const FailpointsEnv = "PEAPOD_FAILPOINTS"

// failpointExitCode is the status of a crash at a failpoint (EX_SOFTWARE).
const failpointExitCode = 70

// FailpointNames are the steps of RunPodSandbox, CreateContainer,
// StartContainer and StopPodSandbox, in order, at which a crash can be
// asked for. Each sits right after the step it names has succeeded.
var FailpointNames = []string{
	"run-pod-after-record", "run-pod-after-files", "run-pod-after-cgroup", "run-pod-after-pause",
	"run-pod-after-network", "run-pod-after-save",
	"create-container-after-bundle", "create-container-after-rootfs", "create-container-after-spec",
	"create-container-after-save",
	"start-container-after-rootfs", "start-container-after-start", "start-container-after-save",
	"stop-pod-after-containers", "stop-pod-after-network", "stop-pod-after-pause", "stop-pod-after-cgroup",
	"stop-pod-after-save",
}

// Failpoints maps a failpoint's name to its action: "" crashes, "hold:PATH"
// holds.
type Failpoints map[string]string

// FailpointsFromEnv reads FailpointsEnv; nil when it is unset.
func FailpointsFromEnv() Failpoints {
	v := os.Getenv(FailpointsEnv)
	if v == "" {
		return nil
	}
	f := Failpoints{}
	for _, name := range strings.Split(v, ",") {
		name, action, _ := strings.Cut(strings.TrimSpace(name), "=")
		if name != "" {
			f[name] = action
		}
	}
	return f
}

// Crash ends the daemon at once, without cleanup, if name is enabled.
func (f Failpoints) Crash(name string) {
	if action, ok := f[name]; ok && action == "" {
		fmt.Fprintf(os.Stderr, "peapod: failpoint %s: exiting with status %d\n", name, failpointExitCode)
		os.Exit(failpointExitCode)
	}
}

// Hold waits at name until its release file exists, if name is held; it
// returns ctx's error when ctx ends first.
func (f Failpoints) Hold(ctx context.Context, name string) error {
	path, ok := strings.CutPrefix(f[name], "hold:")
	if !ok {
		return nil
	}
	fmt.Fprintf(os.Stderr, "peapod: failpoint %s: holding until %s exists\n", name, path)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("held at failpoint %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
