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
	"time"
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
// cannot be reused) has exited, on Go's poller through a pidfd. os/exec's
// Wait blocks in waitid and holds an OS thread for as long as the child
// lives: one thread per pod, 500 at 500 pods. The caller reaps it
// afterwards (exec.Cmd.Wait, then immediate). It returns at once when no
// pidfd can be had, and the caller's Wait blocks as before.
func AwaitChildExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	awaitReadable(f)
}

// awaitReadable waits until the pidfd f is readable: its process exited.
// On Go's poller it holds no thread; a pidfd the poller did not take is
// waited for in a blocking poll, which holds one.
func awaitReadable(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return // closed: there is nothing to wait for
	}
	// The callback returns false (wait for the poller) until then.
	if rc.Read(func(fd uintptr) bool { return pidfdReadable(fd, 0) }) == nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for !pidfdReadable(fd, -1) {
		}
	})
}

// pidfdReadable polls the pidfd fd once, for up to timeout ms (-1: until
// it is readable). A signal that arrives meanwhile (the Go scheduler's
// SIGURG, the SIGCHLD of any child's exit) fails poll with EINTR even with
// a zero timeout: that is no exit, and the poll is repeated. Only a
// descriptor poll cannot take (EBADF, EINVAL) ends the wait unseen.
func pidfdReadable(fd uintptr, timeout int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, timeout)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ENOMEM:
			time.Sleep(10 * time.Millisecond)
			continue
		case err != nil:
			return true
		}
		return n > 0
	}
}

// OnExit calls fn, from a goroutine of its own, once the process pid with
// this start time exits. It reports gone (and never calls fn) when the
// process is gone already, and an error (gone false, fn never called) when
// it could not watch a process that may still run: a failed pidfd_open is
// not an exit. A pidfd registered with Go's poller costs no thread while
// it waits.
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
	f := os.NewFile(uintptr(fd), "pidfd")
	go func() {
		defer f.Close()
		awaitReadable(f)
		fn()
	}()
	return false, nil
}
