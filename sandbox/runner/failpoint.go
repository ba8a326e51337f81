package runner

import (
	"os"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A test-only failpoint (the daemon's PEAPOD_FAILPOINTS, sandbox/failpoint.go,
// which the keeper passes on to its runners): with HoldStartFailpoint
// listed, a runner whose container carries the annotation
// HoldStartAnnotation=PATH holds the start until PATH exists, so that a
// test gets a start that takes as long as it wants (the keeper kills a
// runner after 60 s). Without the failpoint, as in every real deployment,
// the annotation does nothing.
const (
	failpointsEnv       = "PEAPOD_FAILPOINTS"
	HoldStartFailpoint  = "runner-hold-start"
	HoldStartAnnotation = "io.peapod.test.hold-start"
)

func failpointEnabled(name string) bool {
	for _, f := range strings.Split(os.Getenv(failpointsEnv), ",") {
		if strings.TrimSpace(f) == name {
			return true
		}
	}
	return false
}

// holdStart waits at the failpoint, if it applies to spec.
func holdStart(spec *specs.Spec) {
	path := spec.Annotations[HoldStartAnnotation]
	if path == "" || !failpointEnabled(HoldStartFailpoint) {
		return
	}
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
