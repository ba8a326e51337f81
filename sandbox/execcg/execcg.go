// Package execcg puts an exec'd process (libcontainer's setns "peapod init")
// into its container's cgroups on cgroup v1 without any write of its PID to
// a cgroup.procs file.
//
// Why: on cgroup v1 a write of a PID to cgroup.procs (what libcontainer and
// runc do for every exec) takes the kernel's global threadgroup lock for
// writing, which waits for an RCU grace period: 5-15 ms here, most of an
// ExecSync round trip and on its critical path (the init waits for the move
// before it gets its config). A thread that writes "0" to a tasks file moves
// only itself, and the kernel skips that lock (~0.02 ms per hierarchy).
//
// How, in three steps:
//  1. The daemon passes a sealed memfd listing the container's tasks files
//     as the process's first extra file (fd 3), and gives libcontainer a
//     cgroup manager with no paths, so that it moves nothing itself.
//  2. In "peapod init", an ELF constructor (execcg.c) that runs before
//     libcontainer's nsexec, while still in the host's mount namespace,
//     opens those files and leaves their descriptors in a new memfd at fd 3.
//  3. Join, called on the main thread in "peapod init" before
//     libcontainer.Init, writes "0" to each. libcontainer execs the command
//     from that thread, so the command starts in the container's cgroups;
//     the init's other threads end with the exec. Until then, the init
//     (nsexec and the Go runtime's start) runs in the daemon's cgroups, as
//     with a PID move, not throttled by the container's.
//
// Every descriptor is close-on-exec: none reaches the command. A failure
// to join ends the init with exit code 125 and the reason on stderr: the
// command never runs outside its cgroups. On cgroup v2 none of this is
// used: libcontainer starts the process in its cgroup with
// clone3(CLONE_INTO_CGROUP).
package execcg

/*
#cgo CFLAGS: -Wall -O2
#include "execcg.h"
// Priority 101 runs before constructors without a priority, such as
// libcontainer nsenter's, which joins the container's mount namespace.
static void __attribute__((constructor(101))) peapod_execcg_init(int argc, char **argv, char **envp) {
	(void)envp;
	execcg_open(argc, argv);
}
*/
import "C"

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Name is the memfd's name the constructor recognises fd 3 by.
const Name = C.EXECCG_NAME

// ListFile returns a sealed memfd listing the tasks file of each cgroup v1
// directory in paths (libcontainer's per-controller cgroup paths;
// duplicates are listed once). It is to be passed as the first of the
// process's ExtraFiles, and serves every exec of the container (it is read
// with pread). unified is the path under the hybrid hierarchy's cgroup v2
// mount (key ""), if any: it has no tasks file and moving a thread there
// across domains is refused, so it is left to the caller.
func ListFile(paths map[string]string) (f *os.File, unified string, err error) {
	var tasks []string
	for key, dir := range paths {
		if key == "" {
			unified = dir
			continue
		}
		if dir == "" || strings.ContainsRune(dir, '\n') {
			continue
		}
		tasks = append(tasks, filepath.Join(dir, "tasks"))
	}
	if len(tasks) == 0 {
		return nil, "", fmt.Errorf("no cgroup v1 paths to join")
	}
	slices.Sort(tasks)
	tasks = slices.Compact(tasks)
	fd, err := unix.MemfdCreate(Name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, "", fmt.Errorf("memfd for the exec cgroup list: %w", err)
	}
	f = os.NewFile(uintptr(fd), Name)
	if _, err := f.WriteString(strings.Join(tasks, "\n") + "\n"); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("write the exec cgroup list: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("seal the exec cgroup list: %w", err)
	}
	return f, unified, nil
}

// Join does step 3 (see the package comment) when fd 3 holds the
// constructor's descriptor list; otherwise it does nothing. It must run on
// the thread that will exec the command: "peapod init"'s main thread,
// before libcontainer.Init.
func Join() {
	buf := make([]byte, 4096)
	n, err := unix.Pread(C.EXECCG_FD, buf, 0)
	if err != nil || !bytes.HasPrefix(buf[:n], []byte(C.EXECCG_MAGIC+"\n")) {
		return // not an exec with a cgroup list (a pipe, socket or other file gives an error)
	}
	for _, field := range strings.Fields(string(buf[len(C.EXECCG_MAGIC)+1 : n])) {
		fd, err := strconv.Atoi(field)
		if err == nil {
			_, err = unix.Write(fd, []byte("0"))
			unix.Close(fd)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "peapod: join the container's cgroups: descriptor %s: %v\n", field, err)
			os.Exit(C.EXECCG_EXIT)
		}
	}
}
