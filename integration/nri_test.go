package integration

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nriTestPlugin is a small real NRI plugin (containerd's stub package, as
// node agents are written): it injects an environment variable, a
// read-only bind mount and an OOM score below the daemon's into every
// container, refuses the container named "refused", and records what the
// runtime told it.
type nriTestPlugin struct {
	mountSrc string
	synced   chan struct{}
	once     sync.Once

	mu        sync.Mutex
	events    []string // "Hook name"
	syncedIDs []string // container IDs of the Synchronize call
}

func (p *nriTestPlugin) record(ev string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
}

func (p *nriTestPlugin) Synchronize(_ context.Context, _ []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p.mu.Lock()
	for _, c := range ctrs {
		p.syncedIDs = append(p.syncedIDs, c.GetId())
	}
	p.mu.Unlock()
	p.once.Do(func() { close(p.synced) })
	return nil, nil
}

func (p *nriTestPlugin) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.record("CreateContainer " + c.GetName())
	if c.GetName() == "refused" {
		return nil, nil, errors.New("policy says no to refused")
	}
	adj := &api.ContainerAdjustment{}
	adj.AddEnv("NRI_INJECTED", "by-plugin")
	adj.AddMount(&api.Mount{Source: p.mountSrc, Destination: "/nri-mount", Type: "bind", Options: []string{"rbind", "ro"}})
	adj.AddAnnotation("nri.test/injected", "yes")
	low := -999 // below the daemon's own: peapod raises it to its own
	adj.SetLinuxOomScoreAdj(&low)
	if c.GetName() == "rlimit" {
		adj.AddRlimit("RLIMIT_NOFILE", 1<<40, 1024) // above any hard limit
	}
	return adj, nil, nil
}

func (p *nriTestPlugin) StartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("StartContainer " + c.GetName())
	if c.GetName() == "nostart" {
		return errors.New("no start for nostart")
	}
	return nil
}

// UpdateContainer adds a CPU weight to every resource update it is asked
// about: the update the runtime applies is the plugin's.
func (p *nriTestPlugin) UpdateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container, _ *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	p.record("UpdateContainer " + c.GetName())
	u := &api.ContainerUpdate{ContainerId: c.GetId()}
	u.SetLinuxCPUShares(333)
	return []*api.ContainerUpdate{u}, nil
}

func (p *nriTestPlugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.record("StopContainer " + c.GetName())
	return nil, nil
}

func (p *nriTestPlugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("RemoveContainer " + c.GetName())
	return nil
}

func (p *nriTestPlugin) Events() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// TestNRIPlugin: a plugin connected to peapod's NRI socket (the test's
// own, under the daemon's directory) sees a container that existed before
// it connected, adjusts the containers created afterwards (its variable
// and bind mount are seen inside; its OOM score below the daemon's is
// raised to the daemon's; an rlimit above the daemon's hard limit is
// refused), fails the create of the one it refuses with FailedPrecondition
// naming its reason and nothing left behind, changes an
// UpdateContainerResources (its CPU weight is applied with the kubelet's
// memory limit), is told Start, Update, Stop and Remove in order, and can
// update a container's memory limit on its own.
func TestNRIPlugin(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.Start()
	pullAll(t, d, image)
	if st, err := os.Stat(d.NRISocket); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("NRI socket %s: %v, mode %v; want 0600", d.NRISocket, err, st.Mode())
	}
	podCfg := podConfig("nri", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	before := startContainer(t, d, pod, podCfg, containerConfig("before", image, "sleep", "1000"))

	src := filepath.Join(d.Dir, "nri-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "file"), []byte("from the plugin's mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plugin := &nriTestPlugin{mountSrc: src, synced: make(chan struct{})}
	s, err := stub.New(plugin, stub.WithPluginName("peapod-test"), stub.WithPluginIdx("10"), stub.WithSocketPath(d.NRISocket))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(sctx); err != nil {
		cancel()
		t.Fatalf("plugin start: %v", err)
	}
	t.Cleanup(func() { cancel(); s.Stop() })
	select {
	case <-plugin.synced:
	case <-time.After(10 * time.Second * timeoutScale):
		t.Fatal("the plugin was not synchronized")
	}
	plugin.mu.Lock()
	synced := slices.Clone(plugin.syncedIDs)
	plugin.mu.Unlock()
	if !slices.Contains(synced, before) {
		t.Errorf("Synchronize gave containers %v, want the existing %s among them", synced, before)
	}

	// Adjusted: env, mount, OOM score no lower than the daemon's.
	id := startContainer(t, d, pod, podCfg, containerConfig("adjusted", image, "sleep", "1000"))
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 20, Cmd: []string{"sh", "-c",
		`echo $NRI_INJECTED; cat /nri-mount/file; (echo x > /nri-mount/new && echo writable) || echo read-only; cat /proc/1/oom_score_adj`}})
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile("/proc/" + strconv.Itoa(d.Cmd.Process.Pid) + "/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	want := "by-plugin\nfrom the plugin's mount\nread-only\n" + string(own)
	if got := string(r.Stdout); r.ExitCode != 0 || got != want {
		t.Errorf("adjusted container: exit %d, output %q (stderr %q), want %q", r.ExitCode, got, r.Stderr, want)
	}

	// Refused by the plugin, and an adjustment peapod refuses: the
	// creates fail, nothing is left.
	list := func() int {
		l, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Containers)
	}
	bundles := func() int {
		e, _ := os.ReadDir(filepath.Join(d.State, "containers"))
		return len(e)
	}
	nCtr, nMounts, nBundles := list(), len(mountsUnder(d.Dir)), bundles()
	for name, reason := range map[string]string{"refused": "policy says no to refused", "rlimit": "RLIMIT_NOFILE"} {
		_, err = d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig(name, image, "sleep", "1000"), SandboxConfig: podCfg})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), reason) || !strings.Contains(err.Error(), "NRI") {
			t.Errorf("create %s: %v, want FailedPrecondition naming NRI and %q", name, err, reason)
		}
	}
	if n := list(); n != nCtr {
		t.Errorf("%d containers after the refused creates, %d before", n, nCtr)
	}
	waitFor(t, 10*time.Second, "no mount or bundle left by the refused creates", func() bool {
		return len(mountsUnder(d.Dir)) == nMounts && bundles() == nBundles
	})

	// A start the plugin refuses: the container ends as StartError and
	// the plugin is told it stopped.
	cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("nostart", image, "sleep", "1000"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no start for nostart") {
		t.Errorf("start refused by the plugin: %v, want FailedPrecondition with its reason", err)
	}
	if st, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: cr.ContainerId}); err != nil ||
		st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || st.GetStatus().GetReason() != "StartError" {
		t.Errorf("status after the refused start: %v %v, want EXITED StartError", st.GetStatus(), err)
	}
	waitFor(t, 10*time.Second, "StopContainer told for the refused start", func() bool { return slices.Contains(plugin.Events(), "StopContainer nostart") })

	// UpdateContainerResources passes through the plugin, which adds a
	// CPU weight to the kubelet's memory limit.
	if _, err := d.RT.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 80 << 20}}); err != nil {
		t.Fatal(err)
	}
	st, err := d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if res := st.GetStatus().GetResources().GetLinux(); res.GetMemoryLimitInBytes() != 80<<20 || res.GetCpuShares() != 333 {
		t.Errorf("after UpdateContainerResources through the plugin: memory %d, cpu shares %d; want %d and the plugin's 333",
			res.GetMemoryLimitInBytes(), res.GetCpuShares(), 80<<20)
	}

	// The plugin's own update: a memory limit, seen in the status.
	const limit = 96 << 20
	failed, err := s.UpdateContainers([]*api.ContainerUpdate{{ContainerId: id, Linux: &api.LinuxContainerUpdate{
		Resources: &api.LinuxResources{Memory: &api.LinuxMemory{Limit: api.Int64(int64(limit))}}}}})
	if err != nil || len(failed) != 0 {
		t.Fatalf("plugin's UpdateContainers: %v, failed %v", err, failed)
	}
	st, err = d.RT.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes(); got != limit {
		t.Errorf("memory limit after the plugin's update: %d, want %d", got, limit)
	}

	// Stop and remove: told in order, after Create and Start.
	if _, err := d.RT.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, e := range plugin.Events() {
		if strings.HasSuffix(e, " adjusted") {
			mine = append(mine, strings.TrimSuffix(e, " adjusted"))
		}
	}
	if want := []string{"CreateContainer", "StartContainer", "UpdateContainer", "StopContainer", "RemoveContainer"}; !slices.Equal(mine, want) {
		t.Errorf("hooks of the adjusted container: %v, want %v", mine, want)
	}
	if evs := plugin.Events(); !slices.Contains(evs, "CreateContainer refused") || slices.Contains(evs, "StartContainer refused") {
		t.Errorf("events %v: want the refused container's CreateContainer and no start", evs)
	}
}

// TestNRISocketInUse: a socket another runtime serves (containerd 2.x
// serves NRI's default path too) is not taken: the daemon starts, says
// NRI is off and why, and the other listener keeps its socket, also after
// the daemon stops.
func TestNRISocketInUse(t *testing.T) {
	regAddr, _ := testImage(t)
	d := newDaemon(t, regAddr)
	l, err := net.Listen("unix", d.NRISocket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	d.Start()
	log := readLog(t, d)
	if !strings.Contains(log, "NRI is off") || !strings.Contains(log, "another runtime serves NRI") {
		t.Errorf("daemon log does not say NRI is off because the socket is served:\n%s", tail(log, 20))
	}
	d.Stop()
	c, err := net.Dial("unix", d.NRISocket)
	if err != nil {
		t.Fatalf("the other listener's socket is gone: %v", err)
	}
	c.Close()
	select {
	case <-accepted: // the daemon's probe, or ours: the listener still serves
	case <-time.After(5 * time.Second):
		t.Fatal("the other listener no longer accepts")
	}
}
