package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// BenchmarkScale (`make bench-scale`, issue 21's node scale) measures what
// a big node costs the runtime, peapod and containerd 2.4.2 in the same
// run:
//
//   - exited: SCALE_EXITED (20000) containers of `true` that have exited,
//     in SCALE_EXITED_PODS (20) host-network pods, each with the labels and
//     annotations the kubelet puts on a container; then the latency (p50,
//     p99 of SCALE_LIST_SAMPLES calls) and the reply's bytes of
//     ListContainers, ListPodSandbox and ListContainerStats and of their
//     Stream* twins (KEP-5825). The unary reply must stay below gRPC's
//     16 MiB, the kubelet's limit (kubernetes#134750: 18.5k exited
//     containers broke containerd's);
//   - pods: SCALE_PODS (500) pods of one `sleep` container each, started
//     one after another with their own network namespace (peapod on its
//     built-in bridge, peapod-cni and containerd on the same CNI bridge
//     conflist), the RunPodSandbox p99
//     of the last fifth, the runtime's memory at SCALE_PODS (daemon RSS +
//     the PSS of every per-pod process, the rule of measure-density.sh) and
//     its CPU while a PLEG-like poll (ListPodSandbox + ListContainers +
//     ListContainerStats every second) runs for SCALE_POLL_S (60) s.
//
// It runs only with PEAPOD_BENCH_SCALE=1 (make bench-scale), not in
// bench-all. SCALE_RUNTIMES picks the runtimes (default: peapod,containerd2
// for exited, whose pods are host-network, and peapod,peapod-cni,containerd2
// for pods); containerd 2.4.2
// is SCALE_CONTAINERD2 (/var/cache/peapod-test/containerd-v2.4.2/containerd,
// built by ../shared/critest/build-containerd2.sh), skipped when absent.
func BenchmarkScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if os.Getenv("PEAPOD_BENCH_SCALE") == "" {
		b.Skip("an hour or more at full size: make bench-scale (PEAPOD_BENCH_SCALE=1)")
	}
	reg, image, pause := runtimeBenchRegistry(b)
	fmt.Printf("scale bench: commit %s, load %s\n", gitCommit(), loadAvg())
	b.Run("exited", func(b *testing.B) {
		// Both runtimes hold their containers at once and the list calls
		// alternate between them sample by sample: a shared machine's
		// load falls on both alike.
		n := envInt("SCALE_EXITED", 20000)
		var rts []*scaleRuntime
		var onePod []string
		for _, name := range scaleRuntimes("peapod,containerd2") {
			rt := startScaleRuntime(b, name, reg, image, pause, false)
			rts = append(rts, rt)
			onePod = append(onePod, makeExited(b, rt, image, n))
		}
		measureLists(b, rts, onePod, n)
	})
	b.Run("pods", func(b *testing.B) {
		n := envInt("SCALE_PODS", 500)
		for _, name := range scaleRuntimes("peapod,peapod-cni,containerd2") {
			b.Run(name, func(b *testing.B) {
				rt := startScaleRuntime(b, name, reg, image, pause, true)
				podsScale(b, rt, image, n)
			})
		}
	})
}

func envInt(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n > 0 {
		return n
	}
	return def
}

func scaleRuntimes(def string) []string {
	return strings.Split(cmp.Or(os.Getenv("SCALE_RUNTIMES"), def), ",")
}

func gitCommit() string {
	out, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	return strings.TrimSpace(string(out))
}

// scaleRuntime is one runtime under the scale bench.
type scaleRuntime struct {
	name      string
	conn      *grpc.ClientConn
	rt        runtimeapi.RuntimeServiceClient
	img       runtimeapi.ImageServiceClient
	daemon    int    // PID
	marker    string // in the command line of its per-pod processes ("" = none)
	cgroupPar string // the pods' cgroup parent ("" = the daemon's own)
	pprof     string // the daemon's PEAPOD_PPROF address ("" = none)
}

// scaleDial is a client that accepts replies of any size, so that the
// bench can show the bytes of a reply the kubelet (16 MiB) would refuse.
func scaleDial(b *testing.B, sock string) *grpc.ClientConn {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// startScaleRuntime starts a private runtime with its own root, socket,
// cgroup parent and, when podNet, a bridge on a /22 of its own (500 pods).
func startScaleRuntime(b *testing.B, name, reg, image, pause string, podNet bool) *scaleRuntime {
	var sr *scaleRuntime
	switch name {
	case "peapod":
		sr = startScalePeapod(b, reg, false)
	case "peapod-cni": // host-network pods (exited) use no network either way
		sr = startScalePeapod(b, reg, podNet)
	case "containerd2":
		sr = startScaleContainerd2(b, reg, pause, podNet)
	default:
		b.Fatalf("SCALE_RUNTIMES: unknown runtime %q (peapod, peapod-cni, containerd2)", name)
	}
	pull(b, context.Background(), runtimeUnderTest{img: sr.img}, image)
	return sr
}

// scaleSubnet is a free 10.196.X.0/22 (X a multiple of 4).
func scaleSubnet(b *testing.B, salt int) string {
	out, _ := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	for i := range 64 {
		x := ((salt + i*5) % 63) * 4
		if !strings.Contains(string(out), fmt.Sprintf("10.196.%d.", x)) {
			return fmt.Sprintf("10.196.%d.0/22", x)
		}
	}
	b.Fatal("no free 10.196.X.0/22")
	return ""
}

// startScalePeapod starts peapod on its built-in network or, with cni,
// on the CNI bridge conflist containerd's half gets (the same plugins, so
// RunPodSandbox compares the same network work).
func startScalePeapod(b *testing.B, reg string, cni bool) *scaleRuntime {
	binDir := b.TempDir()
	if err := testenv.BuildPeapod("../..", binDir); err != nil {
		b.Fatal(err)
	}
	suffix := strconv.Itoa(os.Getpid() % 100000)
	network, conflist, bridge := "builtin", "", "pps"+suffix
	if cni {
		bridge = "ppc" + suffix
		guardForward(b, bridge)
		network, conflist = "cni", benchConflist(bridge, scaleSubnet(b, os.Getpid()+29), b.TempDir())
	}
	d := testenv.NewDaemon(b, testenv.DaemonOptions{
		Binary:       filepath.Join(binDir, "peapod"),
		Name:         "peapod-scale",
		CgroupParent: "/peapod-scale-" + suffix,
		Bridge:       bridge,
		PodCIDR:      scaleSubnet(b, os.Getpid()),
		Network:      network,
		CNIConflist:  conflist,
		Registries:   testenv.MirrorRegistries(reg),
		KillWithTest: true,
		QuietCleanup: true,
		ReadyTimeout: 60 * time.Second,
	})
	pprofAddr := ""
	if os.Getenv("SCALE_PROFILE_DIR") != "" {
		pprofAddr = scaleFreeAddr(b)
		// Every 4 KiB allocated sampled (the default, 512 KiB, leaves a
		// few samples per pod's bytes): the retained heap by call site.
		d.Env = append(d.Env, "PEAPOD_PPROF="+pprofAddr, "GODEBUG=memprofilerate=4096")
	}
	d.Start()
	conn := scaleDial(b, d.Socket)
	name := "peapod"
	if cni {
		name = "peapod-cni"
	}
	return &scaleRuntime{name: name, conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn), daemon: d.Cmd.Process.Pid, pprof: pprofAddr}
}

// scaleContainerdConfig is containerd 2.x's config (version 3) for the scale
// bench: ../shared/critest/containerd/config-v2.toml.tmpl's settings,
// with the bench's registry and pause image.
const scaleContainerdConfig = `version = 3
root = "@DIR@/root"
state = "@DIR@/state"
[grpc]
  address = "@SOCK@"
  max_recv_message_size = 16777216
  max_send_message_size = 16777216
[ttrpc]
  address = "@SOCK@.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "@DIR@/opt"
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "@SANDBOX_IMAGE@"
    [plugins."io.containerd.cri.v1.images".registry]
      config_path = "@DIR@/hosts.d"
  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
          Root = "@DIR@/runc"
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "@DIR@/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [plugins."io.containerd.nri.v1.nri"]
    disable = true
`

// startScaleContainerd2 starts containerd 2.4.2 on its own root, socket
// and (podNet) CNI bridge; its pods get the cgroup parent
// /scale-ctrd-PID. Cleanup removes the pods, stops it, ends the shims it
// left by PID, and removes the cgroups, mounts, bridge and directory.
func startScaleContainerd2(b *testing.B, reg, pause string, podNet bool) *scaleRuntime {
	bin := cmp.Or(os.Getenv("SCALE_CONTAINERD2"), "/var/cache/peapod-test/containerd-v2.4.2/containerd")
	if _, err := os.Stat(bin); err != nil {
		b.Skipf("containerd 2.4.2 not built (%v): ../shared/critest/build-containerd2.sh, then SCALE_CONTAINERD2", err)
	}
	dir, err := os.MkdirTemp("", "containerd2-scale-")
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	for _, d := range []string{filepath.Join(dir, "hosts.d", reg), filepath.Join(dir, "cni", "net.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	render := func(tmpl string) []byte {
		return []byte(strings.NewReplacer("@DIR@", dir, "@SOCK@", sock, "@REGISTRY@", reg, "@SANDBOX_IMAGE@", pause).Replace(tmpl))
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.d", reg, "hosts.toml"), render(hostsConfig), 0o644); err != nil {
		b.Fatal(err)
	}
	bridge := "ctrs" + strconv.Itoa(os.Getpid()%100000)
	if podNet {
		guardForward(b, bridge)
		conf := benchConflist(bridge, scaleSubnet(b, os.Getpid()+17), filepath.Join(dir, "ipam"))
		if err := os.WriteFile(filepath.Join(dir, "cni", "net.d", "10-scale.conflist"), []byte(conf), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), render(scaleContainerdConfig), 0o644); err != nil {
		b.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	// Its shim is looked up in PATH: the one built beside it.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	exited := startDaemon(b, cmd, logf)
	cgParent := "/scale-ctrd-" + strconv.Itoa(os.Getpid())
	conn := scaleDial(b, sock)
	sr := &scaleRuntime{name: "containerd2", conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn),
		daemon: cmd.Process.Pid, marker: sock, cgroupPar: cgParent}
	b.Cleanup(func() {
		scaleRemoveAllPods(sr.rt)
		stopByPID(cmd, exited, 20*time.Second)
		for _, p := range allProcesses() { // shims of pods it could not remove
			if strings.Contains(p.cmdline, sock) {
				syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		testenv.RemoveCgroup(cgParent)
		unmountUnder(dir)
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := sr.rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return sr
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			b.Fatalf("containerd 2 exited:\n%s", tail(log, 3000))
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("containerd 2 did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scaleRemoveAllPods stops and removes every pod, 8 at a time.
func scaleRemoveAllPods(rt runtimeapi.RuntimeServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	parallel(8, len(resp.Items), func(i int) error {
		id := resp.Items[i].Id
		rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		return nil
	})
}

// parallel runs fn(0..n-1) on w workers and returns the first error.
func parallel(w, n int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// scalePodConfig is a pod as the kubelet asks for it: labels, annotations,
// log directory; host network when !podNet.
func (sr *scaleRuntime) scalePodConfig(name string, podNet bool) *runtimeapi.PodSandboxConfig {
	netMode := runtimeapi.NamespaceMode_NODE
	if podNet {
		netMode = runtimeapi.NamespaceMode_POD
	}
	uid := fmt.Sprintf("5ca1e000-%d-", os.Getpid())
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "scale-bench", Uid: uid + name},
		Labels: map[string]string{
			"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "scale-bench", "io.kubernetes.pod.uid": uid + name, "app": "scale",
		},
		Annotations: map[string]string{"kubernetes.io/config.seen": time.Now().Format(time.RFC3339Nano), "kubernetes.io/config.source": "api"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: sr.cgroupPar,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: netMode, Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
}

// kubeletContainer is a container config with the labels and annotations
// the kubelet sets (pkg/kubelet/kuberuntime/labels.go): they are most of
// a ListContainers item's bytes.
func kubeletContainer(pod *runtimeapi.PodSandboxConfig, name, image string, cmd []string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  cmd,
		Labels: map[string]string{
			"io.kubernetes.container.name": name,
			"io.kubernetes.pod.name":       pod.Metadata.Name,
			"io.kubernetes.pod.namespace":  pod.Metadata.Namespace,
			"io.kubernetes.pod.uid":        pod.Metadata.Uid,
		},
		Annotations: map[string]string{
			"io.kubernetes.container.hash":                     "5ca1ab1e",
			"io.kubernetes.container.restartCount":             "0",
			"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
			"io.kubernetes.container.terminationMessagePolicy": "File",
			"io.kubernetes.pod.terminationGracePeriod":         "30",
		},
	}
}

// ------------------------------------------------------------ exited

// makeExited makes n exited containers of `true` in SCALE_EXITED_PODS
// host-network pods, SCALE_WORKERS at a time, and returns one pod's ID.
func makeExited(b *testing.B, sr *scaleRuntime, image string, n int) string {
	ctx := context.Background()
	podCount := min(envInt("SCALE_EXITED_PODS", 20), n)
	pods := make([]string, podCount)
	cfgs := make([]*runtimeapi.PodSandboxConfig, podCount)
	for i := range pods {
		cfgs[i] = sr.scalePodConfig(fmt.Sprintf("exited-%d", i), false)
		resp, err := sr.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfgs[i]})
		if err != nil {
			b.Fatalf("RunPodSandbox: %v", err)
		}
		pods[i] = resp.PodSandboxId
	}
	// Kept under the pod's 1/s: the runtime restarts nothing, but a
	// keeper of many containers is what a crash-looping node has.
	t0 := time.Now()
	var made atomic.Int64
	var mu sync.Mutex
	var createLat, startLat []time.Duration
	err := parallel(envInt("SCALE_WORKERS", 4), n, func(i int) error {
		p := i % podCount
		cfg := kubeletContainer(cfgs[p], fmt.Sprintf("c%d", i), image, []string{"true"})
		t := time.Now()
		cr, err := sr.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pods[p], SandboxConfig: cfgs[p], Config: cfg})
		if err != nil {
			return fmt.Errorf("CreateContainer %d: %w", i, err)
		}
		t1 := time.Now()
		if _, err := sr.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			return fmt.Errorf("StartContainer %d: %w", i, err)
		}
		mu.Lock()
		createLat, startLat = append(createLat, t1.Sub(t)), append(startLat, time.Since(t1))
		mu.Unlock()
		if m := made.Add(1); m%2000 == 0 {
			fmt.Printf("  %s: %d containers in %v\n", sr.name, m, time.Since(t0).Round(time.Second))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// Wait until every one has exited.
	running := &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}}
	for deadline := time.Now().Add(5 * time.Minute); ; {
		resp, err := sr.rt.ListContainers(ctx, running)
		if err != nil {
			b.Fatalf("ListContainers: %v", err)
		}
		if len(resp.Containers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d containers still running", len(resp.Containers))
		}
		time.Sleep(time.Second)
	}
	cl, sl := percentiles(createLat), percentiles(startLat)
	fmt.Printf("%s: %d exited containers in %d pods made in %v (CreateContainer p50 %.1f p99 %.1f ms, StartContainer p50 %.1f p99 %.1f ms)\n",
		sr.name, n, podCount, time.Since(t0).Round(time.Second), ms(cl.p50), ms(cl.p99), ms(sl.p50), ms(sl.p99))
	return pods[0]
}

// listCall is one list RPC as the bench calls it: typed (decoded, as the
// kubelet does) and on the wire (read to its last byte, not decoded: the
// runtime's share; decoding 15 MB of maps costs the client as much
// whoever answers).
type listCall struct {
	name   string
	method string
	stream bool
	req    func(onePod string) proto.Message
	typed  func(ctx context.Context, rt runtimeapi.RuntimeServiceClient, req proto.Message) (items, bytes, maxMsg, msgs int, err error)
}

func unaryCall[Q proto.Message, R proto.Message](name, rpc string, req func(string) Q, call func(context.Context, Q, ...grpc.CallOption) (R, error), count func(R) int) listCall {
	return listCall{name: name, method: "/runtime.v1.RuntimeService/" + rpc, req: func(p string) proto.Message { return req(p) },
		typed: func(ctx context.Context, _ runtimeapi.RuntimeServiceClient, q proto.Message) (int, int, int, int, error) {
			r, err := call(ctx, q.(Q))
			if err != nil {
				return 0, 0, 0, 0, err
			}
			sz := proto.Size(r)
			return count(r), sz, sz, 1, nil
		}}
}

func streamCall[Q proto.Message, R any](name, rpc string, req func(string) Q, open func(context.Context, Q, ...grpc.CallOption) (grpc.ServerStreamingClient[R], error), count func(*R) int) listCall {
	return listCall{name: name, method: "/runtime.v1.RuntimeService/" + rpc, stream: true, req: func(p string) proto.Message { return req(p) },
		typed: func(ctx context.Context, _ runtimeapi.RuntimeServiceClient, q proto.Message) (items, bytes, maxMsg, msgs int, err error) {
			s, err := open(ctx, q.(Q))
			if err != nil {
				return 0, 0, 0, 0, err
			}
			for {
				r, err := s.Recv()
				if err == io.EOF {
					return items, bytes, maxMsg, msgs, nil
				}
				if err != nil {
					return 0, 0, 0, 0, err
				}
				sz := proto.Size(any(r).(proto.Message))
				bytes, maxMsg, msgs, items = bytes+sz, max(maxMsg, sz), msgs+1, items+count(r)
			}
		}}
}

// measureLists measures each list call on every runtime, alternating
// between the runtimes sample by sample, and prints one table.
func measureLists(b *testing.B, rts []*scaleRuntime, onePod []string, n int) {
	ctx := context.Background()
	samples := envInt("SCALE_LIST_SAMPLES", 20)
	calls := func(rt runtimeapi.RuntimeServiceClient) []listCall {
		all := func(string) *runtimeapi.ListContainersRequest { return &runtimeapi.ListContainersRequest{} }
		return []listCall{
			unaryCall("ListContainers", "ListContainers", all, rt.ListContainers, func(r *runtimeapi.ListContainersResponse) int { return len(r.Containers) }),
			unaryCall("ListContainers, one pod", "ListContainers", func(p string) *runtimeapi.ListContainersRequest {
				return &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: p}}
			}, rt.ListContainers, func(r *runtimeapi.ListContainersResponse) int { return len(r.Containers) }),
			unaryCall("ListPodSandbox", "ListPodSandbox", func(string) *runtimeapi.ListPodSandboxRequest { return &runtimeapi.ListPodSandboxRequest{} },
				rt.ListPodSandbox, func(r *runtimeapi.ListPodSandboxResponse) int { return len(r.Items) }),
			unaryCall("ListContainerStats", "ListContainerStats", func(string) *runtimeapi.ListContainerStatsRequest { return &runtimeapi.ListContainerStatsRequest{} },
				rt.ListContainerStats, func(r *runtimeapi.ListContainerStatsResponse) int { return len(r.Stats) }),
			unaryCall("ListPodSandboxStats", "ListPodSandboxStats", func(string) *runtimeapi.ListPodSandboxStatsRequest { return &runtimeapi.ListPodSandboxStatsRequest{} },
				rt.ListPodSandboxStats, func(r *runtimeapi.ListPodSandboxStatsResponse) int { return len(r.Stats) }),
			streamCall("StreamContainers", "StreamContainers", func(string) *runtimeapi.StreamContainersRequest { return &runtimeapi.StreamContainersRequest{} },
				rt.StreamContainers, func(r *runtimeapi.StreamContainersResponse) int { return len(r.Containers) }),
			streamCall("StreamPodSandboxes", "StreamPodSandboxes", func(string) *runtimeapi.StreamPodSandboxesRequest { return &runtimeapi.StreamPodSandboxesRequest{} },
				rt.StreamPodSandboxes, func(r *runtimeapi.StreamPodSandboxesResponse) int { return len(r.PodSandboxes) }),
			streamCall("StreamContainerStats", "StreamContainerStats", func(string) *runtimeapi.StreamContainerStatsRequest { return &runtimeapi.StreamContainerStatsRequest{} },
				rt.StreamContainerStats, func(r *runtimeapi.StreamContainerStatsResponse) int { return len(r.ContainerStats) }),
		}
	}
	time.Sleep(2 * time.Second)
	byRT := make([][]listCall, len(rts))
	for i, rt := range rts {
		byRT[i] = calls(rt.rt)
	}
	fmt.Printf("\n%d exited containers, samples alternating between the runtimes (bytes: the reply, or a stream's total and its largest message)\n", n)
	fmt.Printf("%-26s %-12s %6s %9s %9s %9s %9s %10s %10s %5s %s\n", "call", "runtime", "items", "wire p50", "wire p99", "p50 ms", "p99 ms", "bytes", "max msg", "msgs", "note")
	for c := range byRT[0] {
		meas := make([]listMeasure, len(rts))
		items := make([]int, len(rts))
		typed := make([][]time.Duration, len(rts))
		wire := make([][]time.Duration, len(rts))
		for s := -1; s < samples; s++ { // -1: the warm-up
			for k := range rts {
				i := (k + max(s, 0)) % len(rts) // who goes first alternates
				if meas[i].err != nil {
					continue
				}
				call := byRT[i][c]
				req := call.req(onePod[i])
				t := time.Now()
				it, bytes, maxMsg, msgs, err := call.typed(ctx, rts[i].rt, req)
				d := time.Since(t)
				if err != nil {
					meas[i].err = err
					continue
				}
				t = time.Now()
				if err := wireCall(rts[i].conn, call.method, req, call.stream); err != nil {
					meas[i].err = err
					continue
				}
				w := time.Since(t)
				if s >= 0 {
					typed[i], wire[i] = append(typed[i], d), append(wire[i], w)
				}
				items[i], meas[i].bytes, meas[i].maxMsg, meas[i].msgs = it, bytes, maxMsg, msgs
			}
		}
		for i, rt := range rts {
			if meas[i].err == nil {
				meas[i].lat, meas[i].wire = percentiles(typed[i]), percentiles(wire[i])
				if name := byRT[i][c].name; (name == "ListContainers" || name == "StreamContainers") && items[i] != n {
					b.Errorf("%s %s: %d items, want %d", rt.name, name, items[i], n)
				}
			}
			fmt.Println(meas[i].row(rt.name, byRT[i][c].name, items[i]))
		}
	}
	for _, rt := range rts {
		fmt.Printf("%s daemon RSS with %d exited containers: %.1f MiB (anonymous %.1f, file-backed %.1f), %d threads\n", rt.name, n,
			float64(statusKiB(rt.daemon, "VmRSS:"))/1024, float64(statusKiB(rt.daemon, "RssAnon:"))/1024, float64(statusKiB(rt.daemon, "RssFile:"))/1024, statusKiB(rt.daemon, "Threads:"))
	}
}

type listMeasure struct {
	lat           latency // with the reply decoded, as the kubelet does
	wire          latency // to the last byte, not decoded
	bytes, maxMsg int     // the whole reply (a stream: all messages), the largest message
	msgs          int
	err           error
}

func (m listMeasure) row(runtime, name string, items int) string {
	if m.err != nil {
		return fmt.Sprintf("%-26s %-12s %6s %9s %9s %9s %9s %10s %10s %5s %v", name, runtime, "-", "-", "-", "-", "-", "-", "-", "-", m.err)
	}
	note := ""
	if m.maxMsg > 16<<20 {
		note = "over the kubelet's 16 MiB"
	}
	return fmt.Sprintf("%-26s %-12s %6d %9.2f %9.2f %9.2f %9.2f %10d %10d %5d %s", name, runtime, items, ms(m.wire.p50), ms(m.wire.p99), ms(m.lat.p50), ms(m.lat.p99), m.bytes, m.maxMsg, m.msgs, note)
}

// ------------------------------------------------------------ pods

func podsScale(b *testing.B, sr *scaleRuntime, image string, n int) {
	ctx := context.Background()
	f := &fleet{rt: sr.rt, daemon: sr.daemon, marker: sr.marker}
	time.Sleep(2 * time.Second)
	f.before = processSet()
	f.d.pods = n
	f.d.daemonRss0 = float64(statusKiB(sr.daemon, "VmRSS:"))
	cpu0 := f.cpu()
	b.Cleanup(func() { scaleRemoveAllPods(sr.rt) })
	var runPod []time.Duration // RunPodSandbox of the last fifth (at least the last pod)
	last := max(n/5, 1)
	t0 := time.Now()
	for i := range n {
		cfg := sr.scalePodConfig(fmt.Sprintf("scale-%d", i), true)
		t := time.Now()
		run, err := sr.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			b.Fatalf("%s RunPodSandbox %d: %v", sr.name, i, err)
		}
		if i >= n-last {
			runPod = append(runPod, time.Since(t))
		}
		f.pods = append(f.pods, run.PodSandboxId)
		cr, err := sr.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: cfg,
			Config: kubeletContainer(cfg, "sleep", image, []string{"sleep", "3600"})})
		if err != nil {
			b.Fatalf("%s CreateContainer %d: %v", sr.name, i, err)
		}
		if _, err := sr.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			b.Fatalf("%s StartContainer %d: %v", sr.name, i, err)
		}
		f.ctrs = append(f.ctrs, cr.ContainerId)
		if (i+1)%100 == 0 {
			fmt.Printf("  %s: %d pods in %v\n", sr.name, i+1, time.Since(t0).Round(time.Second))
		}
	}
	f.d.start = time.Since(t0)
	f.d.cpuSeconds = f.cpu() - cpu0
	d := f.measure(b)
	sr.saveProfiles(b, n)
	totalMiB := (d.daemonRssN + d.perPodPss*float64(n)) / 1024

	window := time.Duration(envInt("SCALE_POLL_S", 60)) * time.Second
	cpuPerMin, pollLat := pollCPU(b, f, window)
	rp := percentiles(runPod)
	fmt.Printf("\n%s, %d pods of one `sleep` container (same run)\n", sr.name, n)
	fmt.Printf("%-58s %12s\n", "metric", sr.name)
	fmt.Printf("%-58s %12.2f\n", fmt.Sprintf("%d pods + containers started one after another (s)", n), d.start.Seconds())
	fmt.Printf("%-58s %12.2f\n", fmt.Sprintf("RunPodSandbox p50, pods %d-%d (ms)", n-last+1, n), ms(rp.p50))
	fmt.Printf("%-58s %12.2f\n", fmt.Sprintf("RunPodSandbox p99, pods %d-%d (ms)", n-last+1, n), ms(rp.p99))
	fmt.Printf("%-58s %12.2f\n", fmt.Sprintf("runtime CPU to start %d pods (s)", n), d.cpuSeconds)
	fmt.Printf("%-58s %12.1f\n", "daemon RSS (MiB)", d.daemonRssN/1024)
	// Anonymous (heap, stacks) against file-backed (the binary's text,
	// bbolt's mmap): what a cut of the daemon's memory would have to touch.
	fmt.Printf("%-58s %12.1f\n", "  of which anonymous (MiB)", float64(statusKiB(sr.daemon, "RssAnon:"))/1024)
	fmt.Printf("%-58s %12.1f\n", "  of which file-backed (MiB)", float64(statusKiB(sr.daemon, "RssFile:"))/1024)
	fmt.Printf("%-58s %12d\n", "daemon threads", statusKiB(sr.daemon, "Threads:"))
	fmt.Printf("%-58s %12.0f\n", "per-pod PSS (KiB)", d.perPodPss)
	fmt.Printf("%-58s %12.1f\n", fmt.Sprintf("runtime memory at %d pods: daemon RSS + per-pod PSS (MiB)", n), totalMiB)
	fmt.Printf("%-58s %12.2f\n", fmt.Sprintf("runtime CPU, PLEG-like poll 1/s for %v (s/min)", window), cpuPerMin)
	fmt.Printf("%-58s %12.2f\n", "one poll (3 list calls) p50 (ms)", ms(pollLat.p50))
	fmt.Printf("%-58s %12.2f\n", "one poll (3 list calls) p99 (ms)", ms(pollLat.p99))
	if strings.HasPrefix(sr.name, "peapod") && n >= 500 {
		fmt.Printf("goal: runtime memory at 500 pods <= 100 MiB: %s\n", verdict(totalMiB <= 100))
	}
}

// pollCPU polls as the kubelet's PLEG and stats do (ListPodSandbox,
// ListContainers, ListContainerStats once a second) for window and
// returns the runtime's CPU seconds per minute and each poll's latency.
func pollCPU(b *testing.B, f *fleet, window time.Duration) (float64, latency) {
	ctx := context.Background()
	procs := f.runtimeProcesses(f.containerPIDs(b))
	ticks := func() int {
		var n int
		for _, pr := range procs {
			n += cpuTicks(pr.pid)
		}
		return n
	}
	c0 := ticks()
	var lat []time.Duration
	t0 := time.Now()
	for time.Since(t0) < window {
		next := time.Now().Add(time.Second)
		t := time.Now()
		if _, err := f.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
			b.Fatalf("ListPodSandbox: %v", err)
		}
		if _, err := f.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
			b.Fatalf("ListContainers: %v", err)
		}
		stats, err := f.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		if err != nil {
			b.Fatalf("ListContainerStats: %v", err)
		}
		lat = append(lat, time.Since(t))
		if len(stats.Stats) < len(f.ctrs) {
			b.Fatalf("ListContainerStats: %d stats for %d containers", len(stats.Stats), len(f.ctrs))
		}
		time.Sleep(time.Until(next))
	}
	return float64(ticks()-c0) / clockTicks / time.Since(t0).Minutes(), percentiles(slices.Clone(lat))
}

// rawCodec sends requests as protobuf and keeps replies undecoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return proto.Marshal(v.(proto.Message)) }
func (rawCodec) Unmarshal(data []byte, v any) error { *v.(*int) = len(data); return nil }
func (rawCodec) Name() string                       { return "proto" }

// wireCall calls method once, reading the reply (every message of a
// stream) without decoding it.
func wireCall(conn *grpc.ClientConn, method string, req proto.Message, stream bool) error {
	ctx := context.Background()
	var n int
	if !stream {
		return conn.Invoke(ctx, method, req, &n, grpc.ForceCodec(rawCodec{}))
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if err := s.RecvMsg(&n); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// scaleFreeAddr is a free loopback TCP address.
func scaleFreeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// saveProfiles writes the daemon's heap (after a GC: what it retains) and
// goroutine profiles at n pods into SCALE_PROFILE_DIR, for
// `go tool pprof -sample_index=inuse_space`; runs at two SCALE_PODS give
// the per-pod slope.
func (sr *scaleRuntime) saveProfiles(b *testing.B, n int) {
	dir := os.Getenv("SCALE_PROFILE_DIR")
	if sr.pprof == "" || dir == "" {
		return
	}
	for _, p := range []struct{ path, file string }{
		{"heap?gc=1", "heap"},
		{"heap?debug=1", "heap.txt"}, // ends with runtime.MemStats: heap, stacks, idle spans
		{"goroutine?debug=1", "goroutine.txt"},
	} {
		resp, err := http.Get("http://" + sr.pprof + "/debug/pprof/" + p.path)
		if err != nil {
			b.Fatalf("profile %s: %v", p.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			b.Fatalf("profile %s: %v", p.path, err)
		}
		out := filepath.Join(dir, fmt.Sprintf("%s-%d-%s", sr.name, n, p.file))
		if err := os.WriteFile(out, body, 0o644); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("  wrote %s\n", out)
	}
}
