package main

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// gcPercent is the daemon's default GOGC, chosen by measurement at 500
// pods (docs/performance.md, "Node scale"). Go's own default, 100, lets
// the heap grow to twice what is live before it collects, so the daemon's
// RSS carried as much garbage as live data (63 MiB anonymous at 500 pods,
// ~23 MB of it live heap). At 50 a collection starts once the heap has
// grown by half what is live: less headroom for collections twice as
// frequent, whose cost grows with the live heap, smoothly. No default
// memory limit (GOMEMLIMIT): below what a large node needs (5,000 exited
// containers held 67 MiB), a soft limit makes the collector run nearly
// all the time (up to half the CPU, Go's cap) instead of letting the heap
// grow.
const gcPercent = 50

// tuneGC applies gcPercent unless the operator set GOGC or GOMEMLIMIT,
// which Go has already applied and which then decide alone.
func tuneGC(log *slog.Logger) {
	if env, set := gcEnvSet(); set {
		log.Debug("garbage collector as the environment sets it", "env", env)
		return
	}
	debug.SetGCPercent(gcPercent)
	log.Debug("garbage collector", "GOGC", gcPercent)
}

// gcEnvSet reports whether GOGC or GOMEMLIMIT is set (not empty, as Go
// reads them), and which.
func gcEnvSet() (string, bool) {
	for _, name := range []string{"GOGC", "GOMEMLIMIT"} {
		if os.Getenv(name) != "" {
			return name, true
		}
	}
	return "", false
}
