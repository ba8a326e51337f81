package main

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInheritedOnExec marks every descriptor above stderr close-on-exec.
// The daemon takes none from whatever started it (no socket activation),
// but a parent may leak some (a host directory, a socket); Go's os/exec
// passes every descriptor without close-on-exec to every child, so each
// keeper, runner and helper would hold it, and through them a container's
// process could reach it before its execve. Go's own descriptors are
// close-on-exec already: marking them again changes nothing.
func closeInheritedOnExec() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Before Linux 5.11: one by one, as /proc/self/fd lists them.
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list inherited descriptors: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		unix.CloseOnExec(fd) // the directory's own fd is gone by now: EBADF, ignored
	}
	return nil
}
