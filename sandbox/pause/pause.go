// Package pause is peapod's built-in pause process: the per-pod process that
// owns the pod's namespaces. It needs no pause image.
//
// It is written in C and runs from an ELF constructor, before the Go runtime
// starts, when peapod is executed as "peapod pod-pause ...". The Go runtime
// therefore never initialises in the pause process: it costs a few pages of
// stack and libc data instead of a Go heap, which matters because one runs
// per pod. Import this package for its side effect in the peapod binary.
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
extern void peapod_pause_constructor(int argc, char **argv, char **envp);
void __attribute__((constructor)) peapod_pause_init(int argc, char **argv, char **envp) {
	peapod_pause_constructor(argc, argv, envp);
}
*/
import "C"

// Command is the argv[1] that turns the peapod binary into the pause process.
const Command = "pod-pause"

// ReadyFD is the descriptor (inherited as ExtraFiles[0]) on which the pause
// reports "ok <holder pid>" ("ok 0" without -P) or an error line once the
// pod is set up and the control socket listens.
const ReadyFD = 3
