package cgroups

import (
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A container in a systemd scope loses its cgroup as soon as its last
// process exits: systemd stops the empty scope and removes the directory,
// usually before peapod hears of the exit, and with it the memory.events
// that says whether the OOM killer acted. systemd's own verdict (the
// scope's Result "oom-kill") misses it too when the kill and the exit come
// close together: the kernel rate-limits memory.events notifications to one
// per 10 ms and drops a pending one when the cgroup goes. So, as
// containerd's shim and CRI-O's conmon do, peapod watches memory.events
// while the container runs, and remembers an OOM it saw there.

type oomWatcher struct {
	mu      sync.Mutex
	fd      int
	wds     map[int]string  // watch descriptor → cgroup directory
	watched map[string]bool // cgroup directories watched, until asked
	seen    map[string]bool // cgroup directory → the OOM killer acted there
}

var (
	oomOnce sync.Once
	oomW    atomic.Pointer[oomWatcher]
	oomErr  error
)

// WatchOOM starts watching the memory.events of a container whose cgroup
// systemd manages (paths: libcontainer's State.CgroupPaths), so that
// OOMKills can still answer after systemd removed the cgroup. Other
// cgroups stay until peapod removes them and need no watch.
func WatchOOM(paths map[string]string) error {
	dir, ok := paths[""]
	if !ok || !strings.HasPrefix(path.Base(dir), ScopePrefix+"-") || !SystemdLive() {
		return nil
	}
	oomOnce.Do(func() {
		w, err := newOOMWatcher()
		oomW.Store(w)
		oomErr = err
	})
	if oomErr != nil {
		return oomErr
	}
	return oomW.Load().add(dir)
}

func newOOMWatcher() (*oomWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify for memory.events: %w", err)
	}
	w := &oomWatcher{fd: fd, wds: map[int]string{}, watched: map[string]bool{}, seen: map[string]bool{}}
	go w.loop()
	return w, nil
}

func (w *oomWatcher) add(dir string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	wd, err := unix.InotifyAddWatch(w.fd, path.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		return fmt.Errorf("watch %s/memory.events: %w", dir, err)
	}
	w.wds[wd] = dir
	w.watched[dir] = true
	w.check(dir) // an OOM before the watch
	return nil
}

// check records an OOM in dir. "oom" counts too: the kernel raises it,
// and notifies, just before it kills, and the notification of the kill
// itself may never come (above).
func (w *oomWatcher) check(dir string) {
	for _, key := range []string{"oom_kill", "oom"} {
		if n, err := readCounter(path.Join(dir, "memory.events"), key); err == nil && n > 0 {
			w.seen[dir] = true
			return
		}
	}
}

func (w *oomWatcher) loop() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.PathMax+1))
	for {
		n, err := unix.Read(w.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			dir, ok := w.wds[int(ev.Wd)]
			if !ok {
				continue
			}
			if ev.Mask&unix.IN_IGNORED != 0 { // the cgroup is gone
				delete(w.wds, int(ev.Wd))
				continue
			}
			w.check(dir)
		}
		w.mu.Unlock()
	}
}

// oomSeen reports whether the watch on dir saw the OOM killer act, and
// whether dir was watched at all; it forgets dir.
func oomSeen(dir string) (seen, watched bool) {
	w := oomW.Load()
	if w == nil {
		return false, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen, watched = w.seen[dir], w.watched[dir]
	for wd, d := range w.wds {
		if d == dir {
			unix.InotifyRmWatch(w.fd, uint32(wd))
			delete(w.wds, wd)
		}
	}
	delete(w.seen, dir)
	delete(w.watched, dir)
	return seen, watched
}
