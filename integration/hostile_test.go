package integration

import (
	"context"
	"fmt"
	"github.com/peapod-cri/peapod/integration/testenv"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hostileCall is one malformed request: the call, and the code it must get
// (codes.OK here means "any error will do").
type hostileCall struct {
	name string
	want codes.Code
	call func(ctx context.Context) error
}

// traces is what the daemon has made on the host: it must be the same
// before and after the hostile requests.
type traces struct {
	procs, mounts, cgroups, veths, pods, containers, stateDirs []string
}

func snapshot(t *testing.T, d *daemon) traces {
	t.Helper()
	c := ctx(t)
	var tr traces
	tr.procs = descendants(d.Cmd.Process.Pid)
	tr.mounts = mountsUnder(d.Dir)
	for _, dir := range testenv.CgroupDirs(d.CgroupParent) {
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				tr.cgroups = append(tr.cgroups, p)
			}
			return nil
		})
	}
	out, _ := exec.Command("ip", "-o", "link", "show", "master", d.Bridge).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			tr.veths = append(tr.veths, f[1])
		}
	}
	pods, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		tr.pods = append(tr.pods, p.Id)
	}
	ctrs, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range ctrs.Containers {
		tr.containers = append(tr.containers, ct.Id)
	}
	for _, dir := range []string{"pods", "containers"} {
		entries, _ := os.ReadDir(filepath.Join(d.State, dir))
		for _, e := range entries {
			tr.stateDirs = append(tr.stateDirs, dir+"/"+e.Name())
		}
	}
	for _, l := range [][]string{tr.procs, tr.mounts, tr.cgroups, tr.veths, tr.pods, tr.containers, tr.stateDirs} {
		slices.Sort(l)
	}
	return tr
}

// descendants lists the PIDs below pid (the daemon: its keepers, their
// pod processes and any runner left over).
func descendants(pid int) []string {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The parent is the second field after the ")" closing the name.
		rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []string
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, strconv.Itoa(c))
			walk(c)
		}
	}
	walk(pid)
	return out
}

// TestHostileRequests sends several hundred malformed CRI requests over the
// daemon's socket. Each must fail, most with InvalidArgument, and together
// they must leave no process, mount, cgroup, veth, pod, container or state
// directory behind.
func TestHostileRequests(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	logDir := t.TempDir()
	podCfg := podConfig("hostile", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	before := snapshot(t, d)
	// The snapshot must see the test pod's own traces, or it proves nothing.
	if len(before.procs) == 0 || len(before.mounts) == 0 || len(before.cgroups) == 0 || len(before.veths) == 0 || len(before.stateDirs) == 0 {
		t.Fatalf("the snapshot misses the test pod: %+v", before)
	}

	profiles := t.TempDir()
	badJSON := filepath.Join(profiles, "bad.json")
	os.WriteFile(badJSON, []byte("{not json"), 0o644)
	noAction := filepath.Join(profiles, "noaction.json")
	os.WriteFile(noAction, []byte(`{"syscalls":[]}`), 0o644)

	// A private mount: propagation from it cannot be asked for.
	private := t.TempDir()
	if err := syscall.Mount("tmpfs", private, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(private, syscall.MNT_DETACH) })
	if err := syscall.Mount("", private, "", syscall.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	calls := hostileCalls(d, pod, podCfg, image, badJSON, noAction, private)
	if len(calls) < 200 {
		t.Fatalf("only %d hostile requests generated", len(calls))
	}
	start := time.Now()
	for _, hc := range calls {
		cctx, cancel := context.WithTimeout(c, 20*time.Second)
		err := hc.call(cctx)
		cancel()
		got := status.Code(err)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", hc.name)
		case hc.want != codes.OK && got != hc.want:
			t.Errorf("%s: %s (%v), want %s", hc.name, got, err, hc.want)
		case got == codes.Unknown || got == codes.Internal:
			t.Errorf("%s: %s is no clear answer: %v", hc.name, got, err)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d hostile requests in %v", len(calls), elapsed.Round(time.Millisecond))
	if elapsed > 60*time.Second {
		t.Errorf("hostile requests took %v, want under 60s", elapsed)
	}
	// A short-lived helper the daemon runs (a runner, ip, nft) may show up
	// in one snapshot: what was left behind is what stays for 10 s.
	var diffs []string
	var after traces
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		after, diffs = snapshot(t, d), nil
		for what, pair := range map[string][2][]string{
			"processes":  {before.procs, after.procs},
			"mounts":     {before.mounts, after.mounts},
			"cgroups":    {before.cgroups, after.cgroups},
			"veths":      {before.veths, after.veths},
			"pods":       {before.pods, after.pods},
			"containers": {before.containers, after.containers},
			"state dirs": {before.stateDirs, after.stateDirs},
		} {
			if !slices.Equal(pair[0], pair[1]) {
				diffs = append(diffs, fmt.Sprintf("%s changed: before %v, after %v", what, pair[0], pair[1]))
			}
		}
		if len(diffs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, d := range diffs {
		t.Error(d)
	}
	if len(after.pods) != 1 || len(after.containers) != 0 {
		t.Errorf("pods %v and containers %v after the hostile requests, want only the test's pod", after.pods, after.containers)
	}
}

func hostileCalls(d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, image, badJSON, noAction, private string) []hostileCall {
	var calls []hostileCall
	add := func(name string, want codes.Code, call func(context.Context) error) {
		calls = append(calls, hostileCall{name, want, call})
	}
	inv := codes.InvalidArgument
	rt, img := d.RT, d.Img

	// Malformed IDs on every RPC that takes one.
	badIDs := map[string]string{
		"empty": "", "traversal": "../../../etc/passwd", "slash": "a/b", "NUL": "ab\x00cd", "space": "ab cd",
		"newline": "ab\ncd", "dots": "..", "long": strings.Repeat("a", 300), "url-escaped": "%2e%2e%2f", "unicode": "ＡＢ",
	}
	for label, id := range badIDs {
		id := id
		add("StartContainer/"+label, inv, func(c context.Context) error {
			_, err := rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id})
			return err
		})
		add("StopContainer/"+label, inv, func(c context.Context) error {
			_, err := rt.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: id})
			return err
		})
		add("RemoveContainer/"+label, inv, func(c context.Context) error {
			_, err := rt.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: id})
			return err
		})
		add("ContainerStatus/"+label, inv, func(c context.Context) error {
			_, err := rt.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			return err
		})
		add("ContainerStats/"+label, inv, func(c context.Context) error {
			_, err := rt.ContainerStats(c, &runtimeapi.ContainerStatsRequest{ContainerId: id})
			return err
		})
		add("ReopenContainerLog/"+label, inv, func(c context.Context) error {
			_, err := rt.ReopenContainerLog(c, &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
			return err
		})
		add("ExecSync/"+label, inv, func(c context.Context) error {
			_, err := rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}})
			return err
		})
		add("Exec/"+label, inv, func(c context.Context) error {
			_, err := rt.Exec(c, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Stdout: true})
			return err
		})
		add("Attach/"+label, inv, func(c context.Context) error {
			_, err := rt.Attach(c, &runtimeapi.AttachRequest{ContainerId: id, Stdout: true})
			return err
		})
		add("UpdateContainerResources/"+label, inv, func(c context.Context) error {
			_, err := rt.UpdateContainerResources(c, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id})
			return err
		})
		add("StopPodSandbox/"+label, inv, func(c context.Context) error {
			_, err := rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
			return err
		})
		add("RemovePodSandbox/"+label, inv, func(c context.Context) error {
			_, err := rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
			return err
		})
		add("PodSandboxStatus/"+label, inv, func(c context.Context) error {
			_, err := rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
			return err
		})
		add("PortForward/"+label, inv, func(c context.Context) error {
			_, err := rt.PortForward(c, &runtimeapi.PortForwardRequest{PodSandboxId: id, Port: []int32{80}})
			return err
		})
		add("CreateContainer/pod "+label, inv, func(c context.Context) error {
			_, err := rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: id, Config: containerConfig("x", image, "true")})
			return err
		})
	}
	// Well-formed IDs of nothing.
	unknown := strings.Repeat("f", 64)
	add("StartContainer/unknown", codes.NotFound, func(c context.Context) error {
		_, err := rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: unknown})
		return err
	})
	add("ExecSync/unknown", codes.NotFound, func(c context.Context) error {
		_, err := rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: unknown, Cmd: []string{"true"}})
		return err
	})
	add("CreateContainer/unknown pod", codes.NotFound, func(c context.Context) error {
		_, err := rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: unknown, Config: containerConfig("x", image, "true")})
		return err
	})
	add("PortForward/unknown pod", codes.NotFound, func(c context.Context) error {
		_, err := rt.PortForward(c, &runtimeapi.PortForwardRequest{PodSandboxId: unknown, Port: []int32{80}})
		return err
	})
	for _, port := range []int32{0, -1, 65536, 1 << 30} {
		port := port
		add(fmt.Sprintf("PortForward/port %d", port), inv, func(c context.Context) error {
			_, err := rt.PortForward(c, &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{port}})
			return err
		})
	}

	// Pod sandboxes.
	n := 0
	podCase := func(name string, want codes.Code, edit func(*runtimeapi.PodSandboxConfig)) {
		n++
		cfg := podConfig(fmt.Sprintf("hostile-pod-%d", n), podCfg.LogDirectory)
		edit(cfg)
		add("RunPodSandbox/"+name, want, func(c context.Context) error {
			_, err := rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		})
	}
	add("RunPodSandbox/nil config", inv, func(c context.Context) error {
		_, err := rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{})
		return err
	})
	podCase("nil metadata", inv, func(p *runtimeapi.PodSandboxConfig) { p.Metadata = nil })
	add("RunPodSandbox/unknown runtime handler", codes.NotFound, func(c context.Context) error {
		_, err := rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podConfig("hostile-handler", podCfg.LogDirectory), RuntimeHandler: "kata-evil"})
		return err
	})
	for label, name := range map[string]string{"empty": "", "traversal": "../../etc", "slash": "a/b", "dotdot": "..", "NUL": "a\x00b",
		"newline": "a\nb", "long": strings.Repeat("n", 300), "tab": "a\tb"} {
		name := name
		podCase("name "+label, inv, func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Name = name })
		podCase("namespace "+label, inv, func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Namespace = name })
		podCase("uid "+label, inv, func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Uid = name })
	}
	podCase("hostname 65", inv, func(p *runtimeapi.PodSandboxConfig) { p.Hostname = strings.Repeat("h", 65) })
	podCase("hostname slash", inv, func(p *runtimeapi.PodSandboxConfig) { p.Hostname = "a/b" })
	podCase("log dir relative", inv, func(p *runtimeapi.PodSandboxConfig) { p.LogDirectory = "relative/logs" })
	podCase("log dir traversal", inv, func(p *runtimeapi.PodSandboxConfig) { p.LogDirectory = "/var/log/pods/../../../etc" })
	podCase("log dir NUL", inv, func(p *runtimeapi.PodSandboxConfig) { p.LogDirectory = "/tmp/a\x00b" })
	podCase("huge label", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Labels = map[string]string{"big": strings.Repeat("x", 300<<10)}
	})
	podCase("huge annotation", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Annotations = map[string]string{"big": strings.Repeat("x", 300<<10)}
	})
	podCase("long label key", inv, func(p *runtimeapi.PodSandboxConfig) { p.Labels = map[string]string{strings.Repeat("k", 400): "v"} })
	podCase("empty label key", inv, func(p *runtimeapi.PodSandboxConfig) { p.Labels = map[string]string{"": "v"} })
	podCase("many annotations", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Annotations = map[string]string{}
		for i := range 3000 {
			p.Annotations[fmt.Sprintf("k%d", i)] = strings.Repeat("v", 100)
		}
	})
	podCase("dns server name", inv, func(p *runtimeapi.PodSandboxConfig) { p.DnsConfig.Servers = []string{"evil.example.com"} })
	podCase("dns server injection", inv, func(p *runtimeapi.PodSandboxConfig) { p.DnsConfig.Servers = []string{"1.1.1.1\nnameserver 6.6.6.6"} })
	podCase("dns search injection", inv, func(p *runtimeapi.PodSandboxConfig) { p.DnsConfig.Searches = []string{"a\noptions evil"} })
	podCase("dns option space", inv, func(p *runtimeapi.PodSandboxConfig) { p.DnsConfig.Options = []string{"ndots:5 evil"} })
	podCase("dns 100 searches", inv, func(p *runtimeapi.PodSandboxConfig) {
		for i := range 100 {
			p.DnsConfig.Searches = append(p.DnsConfig.Searches, fmt.Sprintf("s%d.example", i))
		}
	})
	for label, pm := range map[string]*runtimeapi.PortMapping{
		"container port 0":     {ContainerPort: 0},
		"container port -1":    {ContainerPort: -1},
		"container port 65536": {ContainerPort: 65536},
		"host port -5":         {ContainerPort: 80, HostPort: -5},
		"host port 99999":      {ContainerPort: 80, HostPort: 99999},
		"protocol 42":          {ContainerPort: 80, Protocol: 42},
		"host ip garbage":      {ContainerPort: 80, HostPort: 8080, HostIp: "300.1.1.1"},
		"host ip hostname":     {ContainerPort: 80, HostPort: 8080, HostIp: "localhost"},
		"nil":                  nil,
	} {
		pm := pm
		podCase("port mapping "+label, inv, func(p *runtimeapi.PodSandboxConfig) { p.PortMappings = []*runtimeapi.PortMapping{pm} })
	}
	for label, kv := range map[string][2]string{
		"escape":              {"net.ipv4/../../kernel/core_pattern", "|/tmp/x"},
		"escape dots":         {"net...kernel.core_pattern", "x"},
		"not namespaced":      {"kernel.core_pattern", "|/tmp/x"},
		"vm":                  {"vm.overcommit_memory", "1"},
		"fs":                  {"fs.file-max", "1"},
		"unknown":             {"net.ipv4.no_such_key", "1"},
		"empty":               {"", "1"},
		"NUL value":           {"net.ipv4.ip_forward", "1\x00"},
		"space":               {"net.ipv4.ip forward", "1"},
		"absolute":            {"/proc/sys/kernel/core_pattern", "x"},
		"huge value":          {"net.ipv4.ip_local_port_range", strings.Repeat("1", 5000)},
		"kernel.shm host ipc": {"kernel.shmmax", "1"},
	} {
		kv := kv
		podCase("sysctl "+label, inv, func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Sysctls = map[string]string{kv[0]: kv[1]}
			if label == "kernel.shm host ipc" {
				p.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}}
			}
		})
	}
	podCase("net sysctl host network", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
		p.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
	})
	podCase("cgroup parent traversal", inv, func(p *runtimeapi.PodSandboxConfig) { p.Linux.CgroupParent = "/../../../sys/fs" })
	podCase("cgroup parent systemd slice", inv, func(p *runtimeapi.PodSandboxConfig) { p.Linux.CgroupParent = "evil.slice" })
	for label, r := range map[string]*runtimeapi.LinuxContainerResources{
		"negative memory": {MemoryLimitInBytes: -1},
		"cpu period 1":    {CpuPeriod: 1},
		"cpu period huge": {CpuPeriod: 1 << 40},
		"cpu quota -2":    {CpuQuota: -2},
		"cpu shares huge": {CpuShares: 1 << 40},
		"cpu shares 1":    {CpuShares: 1},
		"oom 99999":       {OomScoreAdj: 99999},
		"cpuset junk":     {CpusetCpus: "0-3;reboot"},
		"unified escape":  {Unified: map[string]string{"../../release_agent": "/tmp/x"}},
	} {
		r := r
		podCase("resources "+label, inv, func(p *runtimeapi.PodSandboxConfig) { p.Linux.Resources = r })
		podCase("overhead "+label, inv, func(p *runtimeapi.PodSandboxConfig) { p.Linux.Overhead = r })
	}
	podCase("run as user -1", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: -1}}
	})
	podCase("supplemental group huge", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{SupplementalGroups: []int64{1 << 40}}
	})
	podCase("namespace mode 9", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: 9}}
	})
	podCase("seccomp type 9", inv, func(p *runtimeapi.PodSandboxConfig) {
		p.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: 9}}
	})

	// Containers in the test's (healthy) pod.
	ctrCase := func(name string, want codes.Code, edit func(*runtimeapi.ContainerConfig)) {
		n++
		cfg := containerConfig(fmt.Sprintf("hostile-ctr-%d", n), image, "sleep", "100")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}, Resources: &runtimeapi.LinuxContainerResources{}}
		edit(cfg)
		add("CreateContainer/"+name, want, func(c context.Context) error {
			_, err := rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
			return err
		})
	}
	add("CreateContainer/nil config", inv, func(c context.Context) error {
		_, err := rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod})
		return err
	})
	ctrCase("nil metadata", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Metadata = nil })
	ctrCase("nil image", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Image = nil })
	ctrCase("empty image", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Image.Image = "" })
	ctrCase("image not pulled", codes.NotFound, func(cfg *runtimeapi.ContainerConfig) { cfg.Image.Image = "registry.k8s.io/not/pulled:1" })
	for label, name := range map[string]string{"empty": "", "traversal": "../../x", "NUL": "a\x00", "long": strings.Repeat("c", 300), "newline": "a\nb"} {
		name := name
		ctrCase("name "+label, inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Metadata.Name = name })
	}
	for label, ref := range map[string]string{"upper": "UPPER/Case:1", "space": "busy box", "double tag": "a:b:c", "bad digest": "busybox@sha256:xyz",
		"traversal": "../../etc/passwd", "NUL": "busybox\x00", "huge": strings.Repeat("a", 5000)} {
		ref := ref
		ctrCase("image "+label, inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Image.Image = ref })
	}
	ctrCase("NUL in command", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Command = []string{"sh", "-c\x00evil"} })
	ctrCase("NUL in args", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Args = []string{"a\x00b"} })
	ctrCase("huge arg", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Args = []string{strings.Repeat("a", 200<<10)} })
	ctrCase("huge argv", inv, func(cfg *runtimeapi.ContainerConfig) {
		for range 20 {
			cfg.Args = append(cfg.Args, strings.Repeat("a", 100<<10))
		}
	})
	ctrCase("huge env", inv, func(cfg *runtimeapi.ContainerConfig) {
		for i := range 20 {
			cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: fmt.Sprintf("E%d", i), Value: []byte(strings.Repeat("v", 100<<10))})
		}
	})
	ctrCase("env empty key", inv, func(cfg *runtimeapi.ContainerConfig) {
		cfg.Envs = []*runtimeapi.KeyValue{{Key: "", Value: []byte("x")}}
	})
	ctrCase("env key with =", inv, func(cfg *runtimeapi.ContainerConfig) {
		cfg.Envs = []*runtimeapi.KeyValue{{Key: "A=B", Value: []byte("x")}}
	})
	ctrCase("env NUL", inv, func(cfg *runtimeapi.ContainerConfig) {
		cfg.Envs = []*runtimeapi.KeyValue{{Key: "A", Value: []byte("x\x00y")}}
	})
	ctrCase("env nil", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Envs = []*runtimeapi.KeyValue{nil} })
	ctrCase("huge labels", inv, func(cfg *runtimeapi.ContainerConfig) {
		cfg.Labels = map[string]string{"x": strings.Repeat("l", 300<<10)}
	})
	ctrCase("huge annotations", inv, func(cfg *runtimeapi.ContainerConfig) {
		cfg.Annotations = map[string]string{"x": strings.Repeat("a", 300<<10)}
	})
	ctrCase("working dir relative", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.WorkingDir = "tmp" })
	ctrCase("working dir traversal", inv, func(cfg *runtimeapi.ContainerConfig) { cfg.WorkingDir = "/../../../etc" })
	for label, lp := range map[string]string{"traversal": "../../../etc/shadow", "absolute": "/etc/shadow", "inner traversal": "a/../../b.log",
		"NUL": "a\x00.log", "long": strings.Repeat("l/", 2100)} {
		lp := lp
		ctrCase("log path "+label, inv, func(cfg *runtimeapi.ContainerConfig) { cfg.LogPath = lp })
	}
	existing := podCfg.LogDirectory
	for label, m := range map[string]*runtimeapi.Mount{
		"dest relative":        {ContainerPath: "etc", HostPath: existing},
		"dest traversal":       {ContainerPath: "/data/../../../etc", HostPath: existing},
		"dest empty":           {ContainerPath: "", HostPath: existing},
		"dest NUL":             {ContainerPath: "/a\x00b", HostPath: existing},
		"source relative":      {ContainerPath: "/data", HostPath: "tmp"},
		"source traversal":     {ContainerPath: "/data", HostPath: "/tmp/../../etc"},
		"source missing":       {ContainerPath: "/data", HostPath: "/no/such/dir/peapod"},
		"propagation 7":        {ContainerPath: "/data", HostPath: existing, Propagation: 7},
		"rro without ro":       {ContainerPath: "/data", HostPath: existing, RecursiveReadOnly: true},
		"rro with rshared":     {ContainerPath: "/data", HostPath: existing, Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		"image subpath escape": {ContainerPath: "/data", Image: &runtimeapi.ImageSpec{Image: image}, ImageSubPath: "../../etc"},
		"nil":                  nil,
		"dest dev traversal":   {ContainerPath: "/dev/../proc/sys", HostPath: existing},
		"source NUL":           {ContainerPath: "/data", HostPath: "/tmp\x00/x"},
		"dest long":            {ContainerPath: "/" + strings.Repeat("d", 5000), HostPath: existing},
		"rshared private src":  {ContainerPath: "/data", HostPath: private, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		"rslave private src":   {ContainerPath: "/data", HostPath: private, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
	} {
		m := m
		ctrCase("mount "+label, inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Mounts = []*runtimeapi.Mount{m} })
	}
	for label, dev := range map[string]*runtimeapi.Device{
		"permissions x":  {HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: "rwx"},
		"permissions ''": {HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: ""},
		"host relative":  {HostPath: "dev/null", ContainerPath: "/dev/n", Permissions: "r"},
		"container rel":  {HostPath: "/dev/null", ContainerPath: "dev/n", Permissions: "r"},
		"host root":      {HostPath: "/", ContainerPath: "/dev/n", Permissions: "r"},
		"regular file":   {HostPath: "/etc/passwd", ContainerPath: "/dev/n", Permissions: "r"},
		"host missing":   {HostPath: "/dev/no-such-device-peapod", ContainerPath: "/dev/n", Permissions: "r"},
		"host traversal": {HostPath: "/dev/../etc/shadow", ContainerPath: "/dev/n", Permissions: "r"},
		"nil":            nil,
	} {
		dev := dev
		ctrCase("device "+label, inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Devices = []*runtimeapi.Device{dev} })
	}
	secCase := func(name string, want codes.Code, edit func(*runtimeapi.LinuxContainerSecurityContext)) {
		ctrCase("security "+name, want, func(cfg *runtimeapi.ContainerConfig) { edit(cfg.Linux.SecurityContext) })
	}
	for _, capName := range []string{"CAP_GOD", "", "cap_sys_admin; rm", "ALLL", "CAP_", "ČAP_SYS_ADMIN"} {
		capName := capName
		secCase("add cap "+capName, inv, func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{capName}}
		})
		secCase("drop cap "+capName, inv, func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities = &runtimeapi.Capability{DropCapabilities: []string{capName}}
		})
	}
	secCase("ambient ALL", inv, func(s *runtimeapi.LinuxContainerSecurityContext) {
		s.Capabilities = &runtimeapi.Capability{AddAmbientCapabilities: []string{"ALL"}}
	})
	for _, v := range []int64{-1, -1 << 40, 1<<32 - 1, 1 << 33} {
		v := v
		secCase(fmt.Sprintf("run as user %d", v), inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsUser = &runtimeapi.Int64Value{Value: v} })
		secCase(fmt.Sprintf("run as group %d", v), inv, func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.RunAsUser = &runtimeapi.Int64Value{Value: 1}
			s.RunAsGroup = &runtimeapi.Int64Value{Value: v}
		})
		secCase(fmt.Sprintf("supplemental group %d", v), inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.SupplementalGroups = []int64{v} })
	}
	secCase("privileged in an unprivileged pod", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.Privileged = true })
	secCase("group without user", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsGroup = &runtimeapi.Int64Value{Value: 5} })
	secCase("username unknown", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsUsername = "no-such-user" })
	secCase("username with colon", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsUsername = "root:0" })
	secCase("username traversal", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.RunAsUsername = "../../etc/shadow" })
	secCase("supplemental policy 5", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.SupplementalGroupsPolicy = 5 })
	secCase("masked relative", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.MaskedPaths = []string{"proc/kcore"} })
	secCase("masked traversal", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.MaskedPaths = []string{"/proc/../etc"} })
	secCase("readonly relative", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.ReadonlyPaths = []string{"sys"} })
	secCase("readonly NUL", inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.ReadonlyPaths = []string{"/sys\x00"} })
	secCase("pid namespace 9", inv, func(s *runtimeapi.LinuxContainerSecurityContext) {
		s.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: 9}
	})
	secCase("target namespace traversal", inv, func(s *runtimeapi.LinuxContainerSecurityContext) {
		s.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "../../x"}
	})
	for label, p := range map[string]*runtimeapi.SecurityProfile{
		"type 9":              {ProfileType: 9},
		"localhost empty":     {ProfileType: runtimeapi.SecurityProfile_Localhost},
		"localhost relative":  {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "profiles/x.json"},
		"localhost missing":   {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/no/such/profile.json"},
		"localhost bad json":  {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: badJSON},
		"localhost no action": {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: noAction},
		"localhost dir":       {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/etc"},
		"localhost NUL":       {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/etc\x00"},
	} {
		p := p
		secCase("seccomp "+label, inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.Seccomp = p })
	}
	for label, p := range map[string]*runtimeapi.SecurityProfile{
		"type 9":            {ProfileType: 9},
		"localhost empty":   {ProfileType: runtimeapi.SecurityProfile_Localhost},
		"localhost profile": {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-apparmor-example-deny-write"},
		"localhost NUL":     {ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "a\x00"},
	} {
		p := p
		secCase("apparmor "+label, inv, func(s *runtimeapi.LinuxContainerSecurityContext) { s.Apparmor = p })
	}
	for label, r := range map[string]*runtimeapi.LinuxContainerResources{
		"negative memory":  {MemoryLimitInBytes: -4096},
		"swap -5":          {MemorySwapLimitInBytes: -5},
		"cpu period 10":    {CpuPeriod: 10},
		"cpu quota 5":      {CpuQuota: 5},
		"cpu shares -1":    {CpuShares: -1},
		"oom -5000":        {OomScoreAdj: -5000},
		"cpuset letters":   {CpusetCpus: "all"},
		"cpuset mems junk": {CpusetMems: "0,,1"},
		"hugepage size":    {HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2XB", Limit: 1}}},
		"hugepage nil":     {HugepageLimits: []*runtimeapi.HugepageLimit{nil}},
		"unified slash":    {Unified: map[string]string{"../cgroup.procs": "1"}},
		"unified dot":      {Unified: map[string]string{".hidden": "1"}},
	} {
		r := r
		ctrCase("resources "+label, inv, func(cfg *runtimeapi.ContainerConfig) { cfg.Linux.Resources = r })
	}
	for label, r := range map[string]*runtimeapi.LinuxContainerResources{
		"negative memory": {MemoryLimitInBytes: -1},
		"cpu shares huge": {CpuShares: 1 << 30},
		"unified escape":  {Unified: map[string]string{"../../../release_agent": "x"}},
	} {
		r := r
		add("UpdateContainerResources/"+label, inv, func(c context.Context) error {
			_, err := rt.UpdateContainerResources(c, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: unknown, Linux: r})
			return err
		})
	}

	// Exec.
	for label, cmd := range map[string][]string{"empty": nil, "NUL": {"sh\x00"}, "huge": {strings.Repeat("x", 200<<10)}} {
		cmd := cmd
		add("ExecSync/cmd "+label, inv, func(c context.Context) error {
			_, err := rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: unknown, Cmd: cmd})
			return err
		})
		add("Exec/cmd "+label, inv, func(c context.Context) error {
			_, err := rt.Exec(c, &runtimeapi.ExecRequest{ContainerId: unknown, Cmd: cmd, Stdout: true})
			return err
		})
	}
	add("ExecSync/negative timeout", inv, func(c context.Context) error {
		_, err := rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: unknown, Cmd: []string{"true"}, Timeout: -1})
		return err
	})
	add("StopContainer/negative timeout", inv, func(c context.Context) error {
		_, err := rt.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: unknown, Timeout: -10})
		return err
	})

	// Images.
	for label, ref := range map[string]string{"empty": "", "upper": "Busybox", "space": "busy box", "double colon": "a::b", "bad digest": "a@sha256:00",
		"traversal": "../../../etc/passwd", "NUL": "a\x00b", "huge": strings.Repeat("a", 5000), "scheme": "http://evil/x", "at only": "@"} {
		ref := ref
		add("PullImage/"+label, inv, func(c context.Context) error {
			_, err := img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			return err
		})
		add("ImageStatus/"+label, inv, func(c context.Context) error {
			_, err := img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			return err
		})
		add("RemoveImage/"+label, inv, func(c context.Context) error {
			_, err := img.RemoveImage(c, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			return err
		})
	}
	add("PullImage/nil spec", inv, func(c context.Context) error {
		_, err := img.PullImage(c, &runtimeapi.PullImageRequest{})
		return err
	})
	add("PullImage/missing tag", codes.NotFound, func(c context.Context) error {
		_, err := img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:no-such-tag"}})
		return err
	})

	// Runtime config.
	for _, cidr := range []string{"10.0.0.0/33", "garbage", "10.0.0.0", "10.0.0.0/8,", "::1/129", "10.0.0.0/8\n10.1.0.0/16"} {
		cidr := cidr
		add("UpdateRuntimeConfig/"+cidr, inv, func(c context.Context) error {
			_, err := rt.UpdateRuntimeConfig(c, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: cidr}}})
			return err
		})
	}
	return calls
}
