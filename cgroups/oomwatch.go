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
	mu    sync.Mutex
	fd    int
	wds   map[int]string  // watch descriptor → cgroup directory
	seen  map[string]bool // cgroup directory → the OOM killer acted there
	onOOM map[string]func()
}

var (
	oomOnce sync.Once
	oomW    atomic.Pointer[oomWatcher]
	oomErr  error
)

// WatchOOM starts watching the memory.events of a container whose cgroup
// systemd manages (paths: libcontainer's State.CgroupPaths), so that
// OOMKills can still answer after systemd removed the cgroup; onOOM runs
// once, on the watcher's goroutine, when it sees the OOM killer act, so
// that the caller can keep the record across a daemon restart. Other
// cgroups stay until peapod removes them and need no watch.
func WatchOOM(paths map[string]string, onOOM func()) error {
	dir, ok := paths[""]
	if !ok || !isSystemdScope(dir) {
		return nil
	}
	noteSliceBaseline(path.Dir(dir))
	oomOnce.Do(func() {
		w, err := newOOMWatcher()
		oomW.Store(w)
		oomErr = err
	})
	if oomErr != nil {
		return oomErr
	}
	return oomW.Load().add(dir, onOOM)
}

// isSystemdScope reports whether dir is the cgroup of a container scope
// that a live systemd manages (and removes when it empties).
func isSystemdScope(dir string) bool {
	return strings.HasPrefix(path.Base(dir), ScopePrefix+"-") && SystemdLive()
}

func newOOMWatcher() (*oomWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify for memory.events: %w", err)
	}
	w := &oomWatcher{fd: fd, wds: map[int]string{}, seen: map[string]bool{}, onOOM: map[string]func(){}}
	go w.loop()
	return w, nil
}

func (w *oomWatcher) add(dir string, onOOM func()) error {
	w.mu.Lock()
	wd, err := unix.InotifyAddWatch(w.fd, path.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		w.mu.Unlock()
		return fmt.Errorf("watch %s/memory.events: %w", dir, err)
	}
	w.wds[wd] = dir
	if onOOM != nil {
		w.onOOM[dir] = onOOM
	}
	noted := w.check(dir) // an OOM before the watch
	w.mu.Unlock()
	if noted != nil {
		noted()
	}
	return nil
}

// check records an OOM in dir and returns the caller's callback the first
// time it does. "oom" counts too: the kernel raises it, and notifies, just
// before it kills, and the notification of the kill itself may never come
// (above). Called with w.mu held.
func (w *oomWatcher) check(dir string) func() {
	if w.seen[dir] {
		return nil
	}
	for _, key := range []string{"oom_kill", "oom"} {
		if n, err := readCounter(path.Join(dir, "memory.events"), key); err == nil && n > 0 {
			w.seen[dir] = true
			f := w.onOOM[dir]
			delete(w.onOOM, dir)
			return f
		}
	}
	return nil
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
		var noted []func()
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
			if f := w.check(dir); f != nil {
				noted = append(noted, f)
			}
		}
		w.mu.Unlock()
		for _, f := range noted {
			f()
		}
	}
}

// oomSeen reports whether the watch on dir saw the OOM killer act; it
// forgets dir.
func oomSeen(dir string) (seen bool) {
	w := oomW.Load()
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen = w.seen[dir]
	for wd, d := range w.wds {
		if d == dir {
			unix.InotifyRmWatch(w.fd, uint32(wd))
			delete(w.wds, wd)
		}
	}
	delete(w.seen, dir)
	delete(w.onOOM, dir)
	return seen
}

// sliceOOM remembers, per pod slice, the slice's oom_kill count already
// accounted to the exits of its containers: 0 for a slice this daemon
// process made, else the count when the first of its containers was
// watched (a slice from before a restart, whose old kills are not new).
var sliceOOM = struct {
	sync.Mutex
	counted map[string]uint64
}{counted: map[string]uint64{}}

// sliceOOMKilled reports whether the OOM killer acted in the slice that held
// the removed scope dir since the last exit of one of the slice's
// containers was accounted. An OOM kill within milliseconds of the start
// comes before the watch is set, and the watch's own read races systemd's
// removal of the scope; the pod slice stays, and its memory.events counts
// its children's kills (cgroup v2 propagates them up unless
// memory_localevents). Two containers of one pod killed at the same moment
// may both be reported. Every exit of a scope updates the count, so a kill
// is accounted once.
func sliceOOMKilled(scopeDir string) bool {
	slice := path.Dir(scopeDir)
	n, err := readCounter(path.Join(slice, "memory.events"), "oom_kill")
	if err != nil {
		return false
	}
	sliceOOM.Lock()
	defer sliceOOM.Unlock()
	last, known := sliceOOM.counted[slice]
	sliceOOM.counted[slice] = n
	return known && n > last
}

// noteSliceBaseline starts accounting a slice this daemon process did not
// make, at its current count, if it is not accounted yet.
func noteSliceBaseline(slice string) {
	sliceOOM.Lock()
	defer sliceOOM.Unlock()
	if _, known := sliceOOM.counted[slice]; known {
		return // the common case: no read on every container start
	}
	if n, err := readCounter(path.Join(slice, "memory.events"), "oom_kill"); err == nil {
		sliceOOM.counted[slice] = n
	}
}

// NoteSliceMade records a pod slice created by this daemon process: every
// kill counted in it is new.
func NoteSliceMade(dir string) {
	sliceOOM.Lock()
	defer sliceOOM.Unlock()
	sliceOOM.counted[dir] = 0
}

// forgetSlice drops the accounting of a removed pod slice.
func forgetSlice(dir string) {
	sliceOOM.Lock()
	defer sliceOOM.Unlock()
	delete(sliceOOM.counted, dir)
}
