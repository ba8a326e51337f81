package cgroups

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// On cgroup v1, a container in a systemd scope (a kind node: systemd as
// PID 1 on a v1 host) loses its memory cgroup, and with it
// memory.oom_control's oom_kill counter, when systemd stops the emptied
// scope, often before peapod hears of the exit. So, as runc's
// notify_on_oom and containerd's v1 OOM watcher do, peapod registers an
// eventfd on memory.oom_control through cgroup.event_control when the
// container starts, and the OOM is recorded when the kernel signals it.
//
// The kernel also signals every registered eventfd once when the cgroup is
// removed, so a signal read after the directory went is ambiguous. A second
// eventfd, a memory.usage_in_bytes threshold no usage reaches, is signalled
// only by that removal. It is registered first: the kernel's offline walk
// takes the newest registration first and runs the removals in order on
// one workqueue, so by the time the threshold's removal is read, the
// oom_control eventfd holds its own removal signal plus one per OOM.

// OOMEvents watches one container's v1 memory cgroup for OOM kills.
type OOMEvents struct {
	dirfd   int // the memory cgroup directory: still there or not
	oomFd   int // eventfd on memory.oom_control
	goneFd  int // eventfd on a threshold never crossed: the removal only
	onOOM   func()
	mu      sync.Mutex
	signals uint64 // oomFd signals read after the directory went
	oom     bool   // the OOM killer acted (as far as the signals tell)
	gone    bool   // the removal was signalled
	closed  bool
	changed chan struct{} // closed and replaced on every change
}

// oomPoller is the one epoll set and goroutine of every OOMEvents.
var oomPoller struct {
	once sync.Once
	epfd int
	err  error
	mu   sync.Mutex
	byFd map[int32]*OOMEvents
}

// WatchOOMEvents registers the OOM eventfd of the container whose controller
// paths are given (libcontainer's State.CgroupPaths) on cgroup v1; onOOM
// runs (once, on the watcher's goroutine) when an OOM is recorded, so that
// the caller can keep the record across a daemon restart. On v2 it returns
// nil: WatchOOM's memory.events watch is the v2 way. Close releases it.
func WatchOOMEvents(paths map[string]string, onOOM func()) (*OOMEvents, error) {
	dir, ok := paths["memory"]
	if !ok || Mode() != "v1" {
		return nil, nil
	}
	oomPoller.once.Do(func() {
		oomPoller.epfd, oomPoller.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if oomPoller.err == nil {
			oomPoller.byFd = map[int32]*OOMEvents{}
			go pollOOMEvents(oomPoller.epfd)
		}
	})
	if oomPoller.err != nil {
		return nil, fmt.Errorf("epoll for OOM events: %w", oomPoller.err)
	}
	w := &OOMEvents{dirfd: -1, oomFd: -1, goneFd: -1, onOOM: onOOM, changed: make(chan struct{})}
	if err := w.register(dir); err != nil {
		w.closeFds()
		return nil, fmt.Errorf("register OOM eventfd on %s: %w", dir, err)
	}
	oomPoller.mu.Lock()
	oomPoller.byFd[int32(w.oomFd)] = w
	oomPoller.byFd[int32(w.goneFd)] = w
	oomPoller.mu.Unlock()
	for _, fd := range []int{w.goneFd, w.oomFd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(oomPoller.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			w.Close()
			return nil, fmt.Errorf("watch OOM eventfd of %s: %w", dir, err)
		}
	}
	// An OOM before the registration counts too (an OOM kill within
	// milliseconds of the start).
	if n, err := w.counter(); err == nil && n > 0 {
		w.mu.Lock()
		w.recordLocked()
		w.mu.Unlock()
	}
	return w, nil
}

func (w *OOMEvents) register(dir string) error {
	var err error
	if w.dirfd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return err
	}
	ctl, err := unix.Openat(w.dirfd, "cgroup.event_control", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ctl)
	// The removal-only eventfd first (see above), then the OOM one.
	if w.goneFd, err = registerEvent(w.dirfd, ctl, "memory.usage_in_bytes", " -1"); err != nil {
		return err
	}
	w.oomFd, err = registerEvent(w.dirfd, ctl, "memory.oom_control", "")
	return err
}

// registerEvent opens file in the cgroup and a non-blocking eventfd, and
// writes "<eventfd> <file fd><args>" to cgroup.event_control.
func registerEvent(dirfd, ctl int, file, args string) (int, error) {
	f, err := unix.Openat(dirfd, file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(f) // the registration holds what it needs
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("eventfd: %w", err)
	}
	line := strconv.Itoa(efd) + " " + strconv.Itoa(f) + args
	if _, err := unix.Write(ctl, []byte(line)); err != nil {
		unix.Close(efd)
		return -1, fmt.Errorf("cgroup.event_control %q (%s): %w", line, file, err)
	}
	return efd, nil
}

// pollOOMEvents is the watcher's goroutine: it lives as long as the daemon.
func pollOOMEvents(epfd int) {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			oomPoller.mu.Lock()
			w := oomPoller.byFd[events[i].Fd]
			oomPoller.mu.Unlock()
			if w != nil {
				w.drain()
			}
		}
	}
}

// drain reads both eventfds and records what they say.
func (w *OOMEvents) drain() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	gone, oom, signals := w.gone, w.oom, w.signals
	// Read the removal-only eventfd first: if it fired, the OOM eventfd's
	// removal signal is in already (above).
	if readEventfd(w.goneFd) > 0 {
		w.gone = true
	}
	if n := readEventfd(w.oomFd); n > 0 {
		if !w.gone && w.exists() {
			w.recordLocked() // signalled while the cgroup is there: an OOM
		} else if w.signals += n; w.signals >= 2 {
			w.recordLocked() // one is the removal, the others OOMs
		}
	}
	if w.gone != gone || w.oom != oom || w.signals != signals {
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

func (w *OOMEvents) recordLocked() {
	if w.oom {
		return
	}
	w.oom = true
	if w.onOOM != nil {
		w.onOOM()
	}
}

// exists reports whether the memory cgroup directory is still there.
func (w *OOMEvents) exists() bool {
	return unix.Faccessat(w.dirfd, "memory.oom_control", unix.F_OK, 0) == nil
}

// counter reads memory.oom_control's oom_kill while the cgroup is there.
func (w *OOMEvents) counter() (uint64, error) {
	f, err := unix.Openat(w.dirfd, "memory.oom_control", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	file := os.NewFile(uintptr(f), "memory.oom_control")
	defer file.Close()
	data, err := io.ReadAll(file)
	if err != nil {
		return 0, err
	}
	return parseCounter(data, "memory.oom_control", "oom_kill")
}

// readEventfd returns the eventfd's count and resets it (0: none).
func readEventfd(fd int) uint64 {
	var b [8]byte
	for {
		n, err := unix.Read(fd, b[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n != 8 {
			return 0
		}
		return binary.NativeEndian.Uint64(b[:])
	}
}

// Killed says, once the container has exited, whether the OOM killer acted
// in its cgroup: memory.oom_control's counter while the cgroup is there,
// else (gone) what the eventfds recorded, waiting up to wait for the
// removal's signal.
func (w *OOMEvents) Killed(wait time.Duration) (killed, gone bool) {
	if n, err := w.counter(); err == nil {
		return n > 0, false
	}
	deadline := time.Now().Add(wait)
	for {
		w.drain()
		w.mu.Lock()
		oom, removed, ch := w.oom, w.gone, w.changed
		w.mu.Unlock()
		left := time.Until(deadline)
		if oom || removed || left <= 0 {
			return oom, true
		}
		select {
		case <-ch:
		case <-time.After(min(left, 50*time.Millisecond)):
		}
	}
}

// Close stops the watch; no onOOM runs after it returns.
func (w *OOMEvents) Close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	oomPoller.mu.Lock()
	delete(oomPoller.byFd, int32(w.oomFd))
	delete(oomPoller.byFd, int32(w.goneFd))
	oomPoller.mu.Unlock()
	w.closeFds()
}

// closeFds closes the descriptors; closing an eventfd removes its
// registration in the kernel, and from the epoll set.
func (w *OOMEvents) closeFds() {
	for _, fd := range []*int{&w.oomFd, &w.goneFd, &w.dirfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}
