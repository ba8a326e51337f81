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

// sliceOOM remembers, per pod slice, the slice's oom_kill count already
// accounted to the exits of its containers.
var sliceOOM struct {
	sync.Mutex
	counted map[string]uint64
}

// sliceOOMKilled reports whether the OOM killer acted in the slice that held
// the removed scope dir since the last exit of one of the slice's
// containers was accounted. An OOM kill within milliseconds of the start
// comes before the watch is set and its scope is gone before the exit is
// seen; the pod slice stays, and its memory.events counts its children's
// kills (cgroup v2 propagates them up unless memory_localevents). Two
// containers of one pod killed at the same moment may both be reported.
// Every exit of a scope updates the count, so a kill is accounted once.
func sliceOOMKilled(scopeDir string) bool {
	slice := path.Dir(scopeDir)
	n, err := readCounter(path.Join(slice, "memory.events"), "oom_kill")
	if err != nil {
		return false
	}
	sliceOOM.Lock()
	defer sliceOOM.Unlock()
	if sliceOOM.counted == nil {
		sliceOOM.counted = map[string]uint64{}
	}
	last, known := sliceOOM.counted[slice]
	sliceOOM.counted[slice] = n
	// A slice first seen after a daemon restart: its old kills are not
	// this exit's.
	return known && n > last || !known && n > 0 && startedHere(slice)
}

// startedHere reports whether slice was made by this daemon process, so
// that its whole oom_kill count is new.
func startedHere(slice string) bool {
	slicesMade.Lock()
	defer slicesMade.Unlock()
	return slicesMade.dirs[slice]
}

// slicesMade are the pod slices this daemon process created.
var slicesMade struct {
	sync.Mutex
	dirs map[string]bool
}

// NoteSliceMade records a pod slice created by this daemon process.
func NoteSliceMade(dir string) {
	slicesMade.Lock()
	defer slicesMade.Unlock()
	if slicesMade.dirs == nil {
		slicesMade.dirs = map[string]bool{}
	}
	slicesMade.dirs[dir] = true
}
