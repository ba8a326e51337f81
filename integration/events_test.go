package integration

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventLog is what one GetContainerEvents subscriber received, by ID.
type eventLog struct {
	mu     sync.Mutex
	byID   map[string][]*runtimeapi.ContainerEventResponse
	err    error
	errors []string // inconsistencies found while receiving
}

func (l *eventLog) types(id string) []runtimeapi.ContainerEventType {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []runtimeapi.ContainerEventType
	for _, ev := range l.byID[id] {
		out = append(out, ev.ContainerEventType)
	}
	return out
}

// subscribe opens a GetContainerEvents stream and records what it receives
// until ctx ends. When check is set, every container event is compared
// with what ContainerStatus says right after it arrives.
func subscribe(ctx context.Context, t *testing.T, d *daemon, check bool) *eventLog {
	t.Helper()
	stream, err := d.RT.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatalf("GetContainerEvents: %v", err)
	}
	// The daemon sends headers once it has subscribed: before that, events
	// could be missed and the counts below would fail for the test's sake.
	if _, err := stream.Header(); err != nil {
		t.Fatalf("GetContainerEvents headers: %v", err)
	}
	l := &eventLog{byID: map[string][]*runtimeapi.ContainerEventResponse{}}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				return
			}
			var problem string
			if ev.PodSandboxStatus == nil || ev.PodSandboxStatus.Metadata == nil {
				problem = "no pod sandbox status"
			}
			if check && problem == "" {
				problem = checkEvent(ctx, d, ev)
			}
			l.mu.Lock()
			l.byID[ev.ContainerId] = append(l.byID[ev.ContainerId], ev)
			if problem != "" {
				l.errors = append(l.errors, fmt.Sprintf("%s %s: %s", ev.ContainerId[:12], ev.ContainerEventType, problem))
			}
			l.mu.Unlock()
		}
	}()
	return l
}

var eventState = map[runtimeapi.ContainerEventType]runtimeapi.ContainerState{
	runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT: runtimeapi.ContainerState_CONTAINER_CREATED,
	runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT: runtimeapi.ContainerState_CONTAINER_RUNNING,
	runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT: runtimeapi.ContainerState_CONTAINER_EXITED,
	runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT: runtimeapi.ContainerState_CONTAINER_EXITED,
}

// checkEvent compares a container event with its own statuses and with
// ContainerStatus, which must already show the state the event reports
// (or a later one).
func checkEvent(ctx context.Context, d *daemon, ev *runtimeapi.ContainerEventResponse) string {
	if ev.PodSandboxStatus.Id == ev.ContainerId {
		return "" // a pod event
	}
	want := eventState[ev.ContainerEventType]
	var own *runtimeapi.ContainerStatus
	for _, st := range ev.ContainersStatuses {
		if st.Id == ev.ContainerId {
			own = st
		}
	}
	if own == nil {
		return "its own status is missing"
	}
	if own.State != want {
		return fmt.Sprintf("its status says %s", own.State)
	}
	resp, err := d.RT.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ev.ContainerId})
	if ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
		if status.Code(err) != codes.NotFound {
			return fmt.Sprintf("ContainerStatus after the deleted event: %v, want NotFound", err)
		}
		return ""
	}
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return "" // removed meanwhile
		}
		return fmt.Sprintf("ContainerStatus: %v", err)
	}
	if resp.Status.State < want {
		return fmt.Sprintf("ContainerStatus says %s, behind the event", resp.Status.State)
	}
	return ""
}

// Three subscribers each see every event of 50 containers that are
// created, started, stopped and removed concurrently, in order per
// container, and ContainerStatus agrees with each event.
func TestContainerEvents(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	subCtx, cancelSubs := context.WithCancel(context.Background())
	defer cancelSubs()
	logs := []*eventLog{subscribe(subCtx, t, d, true), subscribe(subCtx, t, d, false), subscribe(subCtx, t, d, false)}

	const pods, perPod = 5, 10
	logDir := t.TempDir()
	podIDs := make([]string, pods)
	podCfgs := make([]*runtimeapi.PodSandboxConfig, pods)
	for i := range pods {
		podCfgs[i] = podConfig(fmt.Sprintf("events-%d", i), logDir)
		run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfgs[i]})
		if err != nil {
			t.Fatalf("run pod: %v", err)
		}
		podIDs[i] = run.PodSandboxId
	}

	start := time.Now()
	var wg sync.WaitGroup
	ids := make(chan string, pods*perPod)
	for i := range pods * perPod {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := i % pods
			cfg := containerConfig(fmt.Sprintf("c%d", i), image, "sleep", "1000")
			cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: podIDs[p], Config: cfg, SandboxConfig: podCfgs[p]})
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			id := cr.ContainerId
			ids <- id
			if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Errorf("start %d: %v", i, err)
			}
			if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
				t.Errorf("stop %d: %v", i, err)
			}
			if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Errorf("remove %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(ids)
	t.Logf("%d containers created, started, stopped and removed in %s", pods*perPod, time.Since(start))
	var all []string
	for id := range ids {
		all = append(all, id)
	}
	if len(all) != pods*perPod {
		t.Fatalf("%d containers made, want %d", len(all), pods*perPod)
	}

	want := fmt.Sprint([]runtimeapi.ContainerEventType{
		runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
	})
	for n, l := range logs {
		waitFor(t, 20*time.Second, fmt.Sprintf("subscriber %d to get the deleted events", n), func() bool {
			for _, id := range all {
				if len(l.types(id)) < 4 {
					return false
				}
			}
			return true
		})
		for _, id := range all {
			if got := fmt.Sprint(l.types(id)); got != want {
				t.Errorf("subscriber %d, container %s: events %s, want %s", n, id[:12], got, want)
			}
		}
		l.mu.Lock()
		for _, e := range l.errors {
			t.Errorf("subscriber %d: %s", n, e)
		}
		if l.err != nil {
			t.Errorf("subscriber %d: stream ended: %v", n, l.err)
		}
		l.mu.Unlock()
	}

	// Pod events: created and started at RunPodSandbox, stopped and
	// deleted at RemovePodSandbox, with the pod's status.
	for _, id := range podIDs {
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("remove pod: %v", err)
		}
	}
	for n, l := range logs {
		for _, id := range podIDs {
			waitFor(t, 10*time.Second, "pod events", func() bool { return len(l.types(id)) >= 4 })
			if got := fmt.Sprint(l.types(id)); got != want {
				t.Errorf("subscriber %d, pod %s: events %s, want %s", n, id[:12], got, want)
			}
			l.mu.Lock()
			last := l.byID[id][3]
			l.mu.Unlock()
			if last.PodSandboxStatus.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || last.PodSandboxStatus.Id != id {
				t.Errorf("pod deleted event: pod status %v", last.PodSandboxStatus)
			}
		}
	}
}

// The stream of a subscriber that goes away is ended by the daemon, and a
// daemon with open streams still stops promptly.
func TestContainerEventsShutdown(t *testing.T) {
	regAddr, _ := testImage(t)
	d := newDaemon(t, regAddr)
	d.Start()
	subCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := subscribe(subCtx, t, d, false)
	gone, cancelGone := context.WithCancel(context.Background())
	subscribe(gone, t, d, false)
	cancelGone()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	d.Cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the event stream to end at shutdown", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.err != nil
	})
	if code := status.Code(l.err); code != codes.Unavailable {
		t.Errorf("stream ended with %v, want Unavailable", l.err)
	}
	d.Cmd.Wait()
	d.Cmd = nil
	d.Conn.Close()
	d.Conn = nil
	t.Logf("daemon stopped %s after SIGTERM with an open event stream", time.Since(start))
}
