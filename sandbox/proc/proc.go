// Package proc names a process by its PID and its start time, which a
// reused PID does not repeat, so that the daemon never signals or joins a
// stranger that took a dead process's PID.
package proc

import (
	"bufio"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"strconv"
	"strings"
)

// StartTime reads the start time (clock ticks since boot) of pid, so
// that a recorded PID is never mistaken for an unrelated process that reused
// the number after a daemon restart.
func StartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm may contain spaces and parentheses: fields start after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is state (field 3); starttime is field 22.
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: short", pid)
	}
	if fields[0] == "Z" {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Alive reports whether pid is still the process that started at start.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := StartTime(pid)
	return err == nil && st == start
}

// ParentPID is the PPid of pid, 0 if it cannot be read.
func ParentPID(pid int) int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// AwaitChildExit blocks until the child pid (not yet reaped: its PID
// cannot be reused) has exited, on the exit watcher's pidfd epoll. os/exec's
// Wait blocks in waitid and holds an OS thread for as long as the child
// lives: one thread per pod, 500 at 500 pods. The caller reaps it
// afterwards (exec.Cmd.Wait, then immediate). It returns at once when no
// pidfd can be had, and the caller's Wait blocks as before.
func AwaitChildExit(pid int) {
	exited := make(chan struct{})
	if OnChildExit(pid, func() { close(exited) }) == nil {
		<-exited
	}
}

// OnChildExit calls fn, from a goroutine of its own, once the child pid
// (not yet reaped, so its PID names it) has exited; the caller reaps it
// there. All watches share one goroutine and epoll (exitWatcher): a
// watch costs an fd and a map entry, no goroutine and no thread. On error
// (no pidfd, no room in the epoll) fn is never called.
func OnChildExit(pid int, fn func()) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return watchPidfd(fd, fn)
}

// watchPidfd hands the pidfd to the exit watcher, which closes it.
func watchPidfd(fd int, fn func()) error {
	w, err := theWatcher()
	if err != nil {
		unix.Close(fd)
		return err
	}
	return w.add(fd, fn)
}

// OnExit calls fn, from a goroutine of its own, once the process pid with
// this start time exits. It reports gone (and never calls fn) when the
// process is gone already, and an error (gone false, fn never called) when
// it could not watch a process that may still run: a failed pidfd_open is
// not an exit. The watch is an fd in the exit watcher's epoll: no
// goroutine, no thread while it waits.
func OnExit(pid int, start uint64, fn func()) (gone bool, err error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) || !Alive(pid, start) {
			return true, nil
		}
		return false, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// The pidfd names whatever process has the PID now: it is the one
	// meant only if the start time still matches after the open.
	if !Alive(pid, start) {
		unix.Close(fd)
		return true, nil
	}
	if err := watchPidfd(fd, fn); err != nil {
		return false, fmt.Errorf("watch process %d: %w", pid, err)
	}
	return false, nil
}
