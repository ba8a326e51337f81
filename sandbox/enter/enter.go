// Package enter is peapod's fast exec path: a C program, run from an ELF
// constructor before the Go runtime starts, that puts one process into a
// running container the way libcontainer's setns init does (namespaces,
// cgroups, session keyring, rlimits, no_new_privs, umask, user and groups,
// capabilities, seccomp, cwd, environment) and executes it. The daemon runs
// it as "<runner binary> exec-enter" (sandbox/exec/fastexec.go) from a sealed
// handle of the binary, so that a container cannot reach the host's binary
// through /proc/<pid>/exe (CVE-2019-5736).
//
// It replaces, per exec, libcontainer's "init" re-execution of the binary:
// the Go runtime's start-up (6-11 ms of CPU), the sync round trips over
// the init pipe and, on cgroup v1, the daemon's writes of the child's PID
// into each hierarchy's cgroup.procs, of which the first waits for an RCU
// grace period. This program, single-threaded, writes "0" into each
// hierarchy's tasks file instead: the same membership for a process of one
// thread, without the global threadgroup lock's grace period.
//
// Import this package for its side effect in every binary the daemon may
// run as its exec helper (cmd/peapod and cmd/peapod-runner).
package enter

/*
#cgo CFLAGS: -Wall -O2
extern void peapod_enter_constructor(int argc, char **argv, char **envp);
void __attribute__((constructor)) peapod_enter_init(int argc, char **argv, char **envp) {
	peapod_enter_constructor(argc, argv, envp);
}
*/
import "C"

// Command is the argv[1] that turns the binary into the exec helper.
const Command = "exec-enter"

// Descriptors the helper gets besides the exec's stdio (0-2).
const (
	ConfigFD = 3 // the exec's configuration, read to EOF (see enter.c)
	ReportFD = 4 // "pid <host pid>\n", then EOF at the exec, or "error <message>\n"
	PidFD    = 5 // pidfd of the container's init, whose namespaces are joined
	BPFFD    = 6 // optional: the container's seccomp program (struct sock_filter[])
)
