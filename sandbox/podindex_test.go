package sandbox

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"unsafe"
)

// TestPodContainersIndex: the containers of one pod come from the index by
// pod (a pod's stats, stop and removal on a node with 20,000 exited
// containers do not copy every container), and the index follows adds and
// removals.
func TestPodContainersIndex(t *testing.T) {
	r := &Runtime{containers: map[string]*container{}, byPod: map[string]map[string]*container{}}
	const pods, perPod = 20, 1000
	for i := range pods * perPod {
		c := &Container{ID: fmt.Sprintf("%064x", i), PodID: fmt.Sprintf("pod%02d", i%pods), State: ContainerExited,
			LogPath: "/var/log/pods/x/y/0.log", Bundle: "/run/peapod/bundles/x", Rootfs: "/var/lib/peapod/overlay/x/merged"}
		r.addContainerLocked(newContainer(c))
	}
	ids := func(cs []Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		slices.Sort(out)
		return out
	}

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	got := r.podContainers("pod07")
	runtime.ReadMemStats(&m1)
	if len(got) != perPod {
		t.Fatalf("pod07 has %d containers, want %d", len(got), perPod)
	}
	for _, c := range got {
		if c.PodID != "pod07" {
			t.Fatalf("container %s of %s listed for pod07", c.ID, c.PodID)
		}
	}
	// One pod's copies, not the node's: 20x fewer bytes than copying all.
	one := uint64(perPod) * uint64(sizeofContainer())
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 3*one {
		t.Errorf("listing one pod's %d containers allocated %d bytes; one pod's copies are %d: the whole node was copied", perPod, alloc, one)
	}

	r.dropContainerLocked(got[0].ID, "pod07")
	if n := len(r.podContainers("pod07")); n != perPod-1 {
		t.Errorf("after one removal pod07 has %d containers, want %d", n, perPod-1)
	}
	if _, ok := r.containers[got[0].ID]; ok {
		t.Errorf("removed container still in the map")
	}
	for _, c := range got[1:] {
		r.dropContainerLocked(c.ID, "pod07")
	}
	if _, ok := r.byPod["pod07"]; ok {
		t.Errorf("an emptied pod stays in the index")
	}
	if n := len(r.podContainers("pod07")); n != 0 {
		t.Errorf("emptied pod07 lists %d containers", n)
	}
	if want, got := pods*perPod-perPod, len(r.containers); got != want {
		t.Errorf("%d containers left, want %d", got, want)
	}
	if a, b := ids(r.podContainers("pod08")), ids(r.podContainers("pod08")); len(a) != perPod || !slices.Equal(a, b) {
		t.Errorf("pod08 lists %d containers", len(a))
	}
}

func sizeofContainer() uintptr { return unsafe.Sizeof(Container{}) }

// TestContainersInCopiesOnlyThem: the stats calls' list of running
// containers does not copy the node's 20,000 exited ones.
func TestContainersInCopiesOnlyThem(t *testing.T) {
	r := &Runtime{containers: map[string]*container{}, byPod: map[string]map[string]*container{}}
	const exited, running = 20000, 50
	for i := range exited + running {
		st := ContainerExited
		if i%(exited/running+1) == 0 && i/(exited/running+1) < running {
			st = ContainerRunning
		}
		r.addContainerLocked(newContainer(&Container{ID: fmt.Sprintf("%064x", i), PodID: "p", State: st}))
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	got := r.ContainersIn(ContainerRunning)
	runtime.ReadMemStats(&m1)
	if len(got) != running {
		t.Fatalf("%d running containers listed, want %d", len(got), running)
	}
	for _, c := range got {
		if c.State != ContainerRunning {
			t.Fatalf("container %s is %v", c.ID, c.State)
		}
	}
	// The pointers to walk (8 bytes each) and the running ones' copies.
	limit := uint64(exited+running)*8*2 + uint64(running)*uint64(sizeofContainer())*4
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > limit {
		t.Errorf("listing %d running containers among %d allocated %d bytes (limit %d): the exited ones were copied", running, exited, alloc, limit)
	}
}
