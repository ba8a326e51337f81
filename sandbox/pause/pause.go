// Package pause is peapod's built-in pause process: the per-pod process that
// owns the pod's namespaces. It needs no pause image.
//
// It is written in C. The keeper that ships is its own static musl binary,
// cmd/peapod-pause (main.c calls peapod_pause_main; built by
// cmd/peapod-pause/build.sh and embedded in peapod): with no Go runtime, no
// glibc and nothing else linked, it costs a few pages per pod. The same C
// also runs from an ELF constructor, before the Go runtime starts, when a
// Go binary importing this package is executed as "BINARY pod-pause ...":
// the daemon's fallback when it has no keeper binary, and the tests'.
// Import this package for that side effect.
//
// The pause process is also the pod's keeper (keeper.c): the child subreaper
// of the pod's containers, the holder of their stdio, the writer of their
// CRI logs (log.c) and the recorder of their exits, serving the daemon on a
// unix socket (-S), so that containers, logs and exit codes survive a daemon
// restart. With -P it forks the pod's PID holder, PID 1 of a new PID
// namespace, and reports its pid; containers join its namespace through
// the keeper's fd of it (sandbox/runner).
package pause

/*
#cgo CFLAGS: -Wall -O2
#include "keeper.h"
#include <string.h>
void __attribute__((constructor)) peapod_pause_init(int argc, char **argv, char **envp) {
	if (argc >= 2 && strcmp(argv[1], PEAPOD_PAUSE_COMMAND) == 0)
		peapod_pause_main(argc, argv, envp); // does not return
}
*/
import "C"

// Command is the argv[1] that turns the peapod binary into the pause process.
const Command = "pod-pause"

// ReadyFD is the descriptor (inherited as ExtraFiles[0]) on which the pause
// reports "ok <holder pid>" ("ok 0" without -P) or an error line once the
// pod is set up and the control socket listens.
const ReadyFD = 3
