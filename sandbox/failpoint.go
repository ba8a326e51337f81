package sandbox

import (
	"fmt"
	"os"
	"strings"
)

// FailpointsEnv names the failpoints at which the daemon crashes on
// purpose, comma-separated, for tests of recovery (integration/crash_test.go).
// Unset, as in every real deployment, no failpoint does anything.
const FailpointsEnv = "PEAPOD_FAILPOINTS"

// failpointExitCode is the status of a crash at a failpoint (EX_SOFTWARE).
const failpointExitCode = 70

// Failpoints are the steps of RunPodSandbox, CreateContainer,
// StartContainer and StopPodSandbox, in order, at which a crash can be
// asked for. Each sits right after the step it names has succeeded.
var Failpoints = []string{
	"run-pod-after-record", "run-pod-after-files", "run-pod-after-cgroup", "run-pod-after-pause",
	"run-pod-after-network", "run-pod-after-save",
	"create-container-after-bundle", "create-container-after-rootfs", "create-container-after-spec",
	"create-container-after-save",
	"start-container-after-rootfs", "start-container-after-start", "start-container-after-save",
	"stop-pod-after-containers", "stop-pod-after-network", "stop-pod-after-pause", "stop-pod-after-cgroup",
	"stop-pod-after-save",
}

type failpoints map[string]bool

func failpointsFromEnv() failpoints {
	v := os.Getenv(FailpointsEnv)
	if v == "" {
		return nil
	}
	f := failpoints{}
	for _, name := range strings.Split(v, ",") {
		if name = strings.TrimSpace(name); name != "" {
			f[name] = true
		}
	}
	return f
}

// crash ends the daemon at once, without cleanup, if name is enabled.
func (f failpoints) crash(name string) {
	if f[name] {
		fmt.Fprintf(os.Stderr, "peapod: failpoint %s: exiting with status %d\n", name, failpointExitCode)
		os.Exit(failpointExitCode)
	}
}
