package proc

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// exitWatcher holds every watched pidfd in one epoll instance, waited on
// by one goroutine. A goroutine per watch (a pod's keeper reaper, its
// holder's watch) costs a stack, ~5 KiB each at hundreds of pods; the
// epoll costs one goroutine for all. Its fd is registered with Go's
// poller, so that the goroutine holds no OS thread while nothing exits.
type exitWatcher struct {
	epfd int
	file *os.File // owns epfd for Go's poller; kept so no finalizer closes it

	mu      sync.Mutex
	watches map[int32]func() // by pidfd; the watcher closes each pidfd
}

var (
	watcherMu sync.Mutex
	watcher   *exitWatcher
)

// theWatcher is the process's one exitWatcher, started on first use. A
// failed start (no fd left) is retried by the next watch.
func theWatcher() (*exitWatcher, error) {
	watcherMu.Lock()
	defer watcherMu.Unlock()
	if watcher != nil {
		return watcher, nil
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1 for pidfd watches: %w", err)
	}
	w := &exitWatcher{epfd: epfd, watches: map[int32]func(){}}
	go w.run()
	watcher = w
	return w, nil
}

// add calls fn, from a goroutine of its own, once the pidfd is readable
// (its process exited), then closes the pidfd. On error fn is never
// called and the pidfd is closed.
func (w *exitWatcher) add(pidfd int, fn func()) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// In the map before the epoll has it: a process that exited already
	// is reported at once, and dispatch must find it.
	w.watches[int32(pidfd)] = fn
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(pidfd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &ev); err != nil {
		delete(w.watches, int32(pidfd))
		unix.Close(pidfd)
		return fmt.Errorf("epoll_ctl add pidfd: %w", err)
	}
	return nil
}

// run dispatches exits for ever. On Go's poller it is woken when a pidfd
// in the epoll is readable and holds no thread meanwhile; if the poller
// does not take the epoll fd, it blocks in epoll_wait, holding one thread
// for all watches.
func (w *exitWatcher) run() {
	if unix.SetNonblock(w.epfd, true) == nil {
		w.file = os.NewFile(uintptr(w.epfd), "pidfd-epoll")
		if rc, err := w.file.SyscallConn(); err == nil {
			// The callback returns false: wait for the poller, then
			// dispatch again. An event that arrives during a dispatch
			// wakes the next wait at once (the poller remembers it).
			rc.Read(func(fd uintptr) bool {
				w.dispatch(0)
				return false
			})
			// Only returns when the poller cannot wait on the fd.
		}
	}
	for {
		w.dispatch(-1)
	}
}

// dispatch takes the ready pidfds from the epoll, waiting up to timeout
// ms (-1: until one is ready), and fires their watches; it drains full
// batches. A signal during epoll_wait (the Go scheduler's SIGURG, any
// child's SIGCHLD) fails it with EINTR even with a zero timeout: no pidfd
// is ready by that, and the wait is repeated.
func (w *exitWatcher) dispatch(timeout int) {
	var events [64]unix.EpollEvent
	for {
		n, err := unix.EpollWait(w.epfd, events[:], timeout)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			// Not expected of an epoll fd this watcher owns. Retried, not
			// returned: the poller wakes on a new event only, and an exit
			// already queued would wait for the next one.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for _, ev := range events[:n] {
			w.fire(ev.Fd)
		}
		if n < len(events) {
			return
		}
		timeout = 0 // a full batch: more may be ready
	}
}

// fire ends the watch of a pidfd that epoll reported: a pidfd reports
// only its process's exit (readable, and HUP once it is reaped). The
// callback runs on a goroutine of its own: callbacks take a pod's mutex,
// which a StopPodSandbox may hold while it waits for the keeper's reap,
// itself a callback of this loop; inline, one slow pod would stall every
// other pod's watch.
func (w *exitWatcher) fire(pidfd int32) {
	w.mu.Lock()
	fn, ok := w.watches[pidfd]
	delete(w.watches, pidfd)
	w.mu.Unlock()
	if !ok {
		return
	}
	unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(pidfd), nil)
	unix.Close(int(pidfd))
	go fn()
}

// pending is the number of watches not yet fired (for tests).
func (w *exitWatcher) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.watches)
}
