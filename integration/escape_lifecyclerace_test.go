package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeLifecycleRaces: CRI calls racing on one container or pod, as a
// confused or hostile client (anyone on the CRI socket, or the kubelet
// under churn) can make them: StartContainer twice at once, RemoveContainer
// during StartContainer, StopPodSandbox during CreateContainer and
// StartContainer, RemovePodSandbox while an ExecSync runs. Every call must
// answer in bounded time, at most one init may run per container, and once
// the pod is removed no process, cgroup or mount of it may be left.
func TestEscapeLifecycleRaces(t *testing.T) {
	d, image := readyDaemon(t)
	marker := "racemark-" + randomSuffix()
	cmd := []string{"sh", "-c", "trap '' TERM; while :; do sleep 1; done", marker}
	call := func(what string, f func(context.Context) error) chan error {
		ch := make(chan error, 1)
		go func() {
			c, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutScale)
			defer cancel()
			ch <- f(c)
		}()
		return ch
	}
	wait := func(what string, ch chan error) error {
		select {
		case err := <-ch:
			return err
		case <-time.After(70 * time.Second * timeoutScale):
			t.Fatalf("%s did not answer in 70 s", what)
			return nil
		}
	}
	for round := 0; round < 4; round++ {
		podCfg := podConfig(fmt.Sprintf("race%d", round), t.TempDir())
		pod := runPod(t, d, podCfg).PodSandboxId
		create := func(name string) string {
			cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig(name, image, cmd...), SandboxConfig: podCfg})
			if err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			return cr.ContainerId
		}
		start := func(id string) func(context.Context) error {
			return func(c context.Context) error {
				_, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id})
				return err
			}
		}

		// The same container started twice at once: one init.
		twice := create("twice")
		a, b := call("start", start(twice)), call("start", start(twice))
		ea, eb := wait("StartContainer", a), wait("StartContainer", b)
		if (ea == nil) == (eb == nil) {
			t.Errorf("round %d: two concurrent starts of one container: %v / %v, want exactly one to succeed", round, ea, eb)
		}
		time.Sleep(300 * time.Millisecond)
		if n := countInits(twice); n != 1 {
			t.Errorf("round %d: %d inits of one container started twice at once", round, n)
		}

		// RemoveContainer while it starts.
		rm := create("removed")
		s := call("start", start(rm))
		time.Sleep(time.Duration(round*15) * time.Millisecond)
		r := call("remove", func(c context.Context) error {
			_, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: rm})
			return err
		})
		es, er := wait("StartContainer", s), wait("RemoveContainer", r)
		t.Logf("round %d: start %v, remove %v", round, es, er)
		if er == nil {
			waitFor(t, 20*time.Second, "the removed container's processes to be gone", func() bool { return len(fightProcesses(rm, "")) == 0 })
		}

		// An ExecSync running while the pod is stopped and removed, and a
		// create and a start racing the stop.
		execID := create("exec")
		if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: execID}); err != nil {
			t.Fatal(err)
		}
		ex := call("exec", func(c context.Context) error {
			_, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: execID, Cmd: []string{"sh", "-c", "sleep 40", marker}, Timeout: 50})
			return err
		})
		late := create("late")
		time.Sleep(200 * time.Millisecond)
		var cr chan error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			cr = call("create", func(c context.Context) error {
				_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("racing", image, cmd...), SandboxConfig: podCfg})
				return err
			})
		}()
		ls := call("start", start(late))
		stop := call("stop pod", func(c context.Context) error {
			_, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
			return err
		})
		wg.Wait()
		if err := wait("StopPodSandbox", stop); err != nil {
			t.Errorf("round %d: StopPodSandbox: %v", round, err)
		}
		ec, el := wait("CreateContainer", cr), wait("StartContainer", ls)
		t.Logf("round %d: create racing the stop: %v; start racing it: %v", round, ec, el)
		for what, err := range map[string]error{"CreateContainer": ec, "StartContainer": el} {
			if c := status.Code(err); c != codes.OK && c != codes.FailedPrecondition && c != codes.NotFound {
				t.Errorf("round %d: %s racing StopPodSandbox answered %v, want OK, FailedPrecondition or NotFound: %v", round, what, c, err)
			}
		}
		t0 := time.Now()
		if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Errorf("round %d: RemovePodSandbox: %v", round, err)
		}
		eex := wait("ExecSync", ex)
		t.Logf("round %d: the exec ended with %v, %v after the removal", round, eex, time.Since(t0).Round(time.Millisecond))
		if left := fightProcesses("", marker); len(left) > 0 {
			waitFor(t, 10*time.Second, "no process of the removed pod", func() bool { return len(fightProcesses("", marker)) == 0 })
		}
		waitFor(t, 20*time.Second, "the pod's cgroups to be removed", func() bool {
			return len(cgroupChildren(filepath.Join(d.CgroupParent, "peapod-pod-"+pod))) == 0
		})
		for _, m := range mountsUnder(d.Dir) {
			if strings.Contains(m, pod) {
				t.Errorf("round %d: mount left after the pod's removal: %s", round, m)
			}
		}
	}
	resp, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil || len(resp.Containers) != 0 {
		t.Errorf("containers listed after every pod was removed: %v %v", resp.GetContainers(), err)
	}
}

// countInits counts the container's processes that are its init: the
// command's shell, whose parent is outside the container's cgroup.
func countInits(id string) int {
	n := 0
	in := map[string]bool{}
	procs := fightProcesses(id, "")
	for _, p := range procs {
		in[p] = true
	}
	for _, p := range procs {
		if pp := parentOf(p); !in[pp] {
			n++
		}
	}
	return n
}

// parentOf is the parent PID of a host process ("" once it is gone).
func parentOf(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return ""
	}
	return f[1]
}
