package bench

import (
	"context"
	"fmt"
	"github.com/peapod-cri/peapod/integration/testenv"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	execSamples  = 200
	forwardBytes = 50 << 20
	forwardRuns  = 5
)

// BenchmarkStreaming measures ExecSync round trips (`true`, p50/p99) and
// port-forward throughput (a 50 MiB download from busybox httpd) with
// peapod and with containerd 1.6, in the same run, against the same image,
// and prints a table. A second peapod daemon with PEAPOD_EXEC_PATH=
// libcontainer (every exec through libcontainer's init, peapod's exec path
// before the C helper of sandbox/enter) is the A/B of the exec path. The
// exec samples alternate between the runtimes one by one, so that all
// meet the same load of the shared machine. Pods use the host network on
// all, so that the numbers are those of the exec and streaming paths, not
// of a CNI setup.
func BenchmarkStreaming(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	reg, image, pause := runtimeBenchRegistry(b)

	runtimes := startExecRuntimes(b, reg, image, pause)
	sampleExecSync(b, runtimes, execSamples, 10)
	// Port-forward downloads, the runtimes taking turns (peapod-libcontainer
	// has the same streaming server as peapod's); the best of each.
	urls := map[*execRuntime]string{}
	forward := map[*execRuntime]float64{}
	for _, r := range runtimes {
		if r.name != "peapod-libcontainer" {
			u, closeFw := openForward(b, r.rt, r.pod, r.port)
			defer closeFw()
			urls[r] = u
		}
	}
	for i := 0; i < forwardRuns; i++ {
		for _, r := range runtimes {
			if u, ok := urls[r]; ok {
				forward[r] = max(forward[r], download(b, u))
			}
		}
	}

	p, l, c := runtimes[0], runtimes[1], runtimes[2]
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nstreaming: ExecSync `true` x%d per runtime (alternating), port-forward %d MiB x%d (best), host-network pods, same run\n", execSamples*b.N, forwardBytes>>20, forwardRuns)
	fmt.Fprintf(&out, "%-22s %12s %14s %12s %10s %14s\n", "metric", "peapod", "peapod-libct", "containerd", "peapod/ctd", "peapod-libct/ctd")
	for _, q := range []int{50, 99} {
		fmt.Fprintf(&out, "%-22s %12s %14s %12s %10s %14s\n", fmt.Sprintf("ExecSync p%d", q),
			p.pct(q).Round(10*time.Microsecond), l.pct(q).Round(10*time.Microsecond), c.pct(q).Round(10*time.Microsecond),
			ratio(float64(p.pct(q)), float64(c.pct(q))), ratio(float64(l.pct(q)), float64(c.pct(q))))
	}
	fmt.Fprintf(&out, "%-22s %12.1f %14s %12.1f %10s %14s\n", "port-forward MB/s", forward[p], "-", forward[c], ratio(forward[p], forward[c]), "-")
	fmt.Print(out.String())
}

// execRuntime is one runtime of the exec A/B (BenchmarkStreaming,
// BenchmarkExecSyncRatio) with its host-network web pod (runWebPod).
type execRuntime struct {
	name     string // peapod, peapod-libcontainer or containerd
	rt       runtimeapi.RuntimeServiceClient
	ctr, pod string
	port     int
	samples  []time.Duration // ExecSync round trips, sorted
}

// startExecRuntimes starts peapod, a peapod with PEAPOD_EXEC_PATH=
// libcontainer (every exec through libcontainer's init, peapod's exec path
// before the C helper of sandbox/enter) and containerd, pulls image on each
// and runs a web pod on each, removed in b.Cleanup.
func startExecRuntimes(b *testing.B, reg, image, pause string) []*execRuntime {
	var runtimes []*execRuntime
	for _, name := range []string{"peapod", "peapod-libcontainer", "containerd"} {
		var rt runtimeapi.RuntimeServiceClient
		var img runtimeapi.ImageServiceClient
		switch name {
		case "peapod":
			rt, img = startPeapodDaemon(b, reg)
		case "peapod-libcontainer":
			ep := startPeapodEndpointEnv(b, reg, "", "1", []string{"PEAPOD_EXEC_PATH=libcontainer"})
			rt, img = ep.rt, ep.img
		case "containerd":
			ep := startContainerd(b, reg, pause)
			rt, img = ep.rt, ep.img
		}
		ctx := context.Background()
		if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
			b.Fatalf("%s: pull: %v", name, err)
		}
		port := freePort(b)
		ctr, pod := runWebPod(b, rt, image, port)
		b.Cleanup(func() {
			rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
			rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
		})
		runtimes = append(runtimes, &execRuntime{name: name, rt: rt, ctr: ctr, pod: pod, port: port})
	}
	return runtimes
}

// sampleExecSync times n×b.N ExecSync `true` round trips on each runtime
// (timeout in seconds), alternating between the runtimes one by one so
// that all meet the same load of the shared machine, and sorts them.
func sampleExecSync(b *testing.B, runtimes []*execRuntime, n int, timeout int64) {
	for i := 0; i < b.N; i++ {
		for j := 0; j < n; j++ {
			for _, r := range runtimes {
				start := time.Now()
				resp, err := r.rt.ExecSync(context.Background(), &runtimeapi.ExecSyncRequest{ContainerId: r.ctr, Cmd: []string{"true"}, Timeout: timeout})
				if err != nil || resp.ExitCode != 0 {
					b.Fatalf("%s: ExecSync true: %v %v", r.name, err, resp)
				}
				r.samples = append(r.samples, time.Since(start))
			}
		}
	}
	for _, r := range runtimes {
		sort.Slice(r.samples, func(i, j int) bool { return r.samples[i] < r.samples[j] })
	}
}

// pct is the q-th percentile of r's sorted samples.
func (r *execRuntime) pct(q int) time.Duration { return r.samples[len(r.samples)*q/100] }

// runWebPod runs a host-network pod whose container serves a 50 MiB file
// with busybox httpd on port, and waits until it is served.
func runWebPod(b *testing.B, rt runtimeapi.RuntimeServiceClient, image string, port int) (ctr, pod string) {
	ctx := context.Background()
	hostNet := &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
	}}
	name := fmt.Sprintf("bench-web-%d", port)
	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
		Linux:    hostNet,
	}
	run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		b.Fatalf("RunPodSandbox: %v", err)
	}
	script := fmt.Sprintf("mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count=%d 2>/dev/null && exec httpd -f -p 127.0.0.1:%d -h /www", forwardBytes>>20, port)
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "web"},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  []string{"sh", "-c", script},
	}})
	if err != nil {
		b.Fatalf("CreateContainer: %v", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		b.Fatalf("StartContainer: %v", err)
	}
	deadline := time.Now().Add(scaled(30 * time.Second))
	for {
		if r, err := http.Head(fmt.Sprintf("http://127.0.0.1:%d/big", port)); err == nil {
			r.Body.Close()
			if r.ContentLength == forwardBytes {
				return cr.ContainerId, run.PodSandboxId
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("httpd on port %d did not serve the file", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openForward opens a port forward to port of pod, as kubectl
// port-forward does (SPDY), on a local port, and returns the URL of the
// test file through it and the function that closes it.
func openForward(b *testing.B, rt runtimeapi.RuntimeServiceClient, pod string, port int) (string, func()) {
	resp, err := rt.PortForward(context.Background(), &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{int32(port)}})
	if err != nil {
		b.Fatalf("PortForward: %v", err)
	}
	u, err := url.Parse(resp.Url)
	if err != nil {
		b.Fatal(err)
	}
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
	if err != nil {
		b.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	closeFw := func() { close(stop); <-done }
	select {
	case <-ready:
	case err := <-done:
		b.Fatalf("port forward: %v", err)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		closeFw()
		b.Fatalf("forwarded ports: %v %v", ports, err)
	}
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))) + "/big", closeFw
}

// download fetches the test file through a forward and returns MB/s.
func download(b *testing.B, url string) float64 {
	start := time.Now()
	r, err := http.Get(url)
	if err != nil {
		b.Fatalf("GET through the forward: %v", err)
	}
	n, err := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if err != nil || n != forwardBytes {
		b.Fatalf("forwarded %d bytes (%v), want %d", n, err, forwardBytes)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds()
}

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPeapodDaemon builds and starts the peapod daemon on its own socket,
// root, state, cgroup parent and bridge, with a registries.conf marking the
// bench registry insecure. It is stopped by its PID in b.Cleanup.
func startPeapodDaemon(b *testing.B, reg string) (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient) {
	return startPeapodDaemonCNI(b, reg, "")
}

// startPeapodDaemonCNI is startPeapodDaemon with conflist (if not "") in
// its CNI config dir, plugins from /usr/lib/cni. A guard table drops what
// the built-in bridge would forward off the machine.
func startPeapodDaemonCNI(b *testing.B, reg, conflist string) (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient) {
	ep := startPeapodEndpoint(b, reg, conflist)
	return ep.rt, ep.img
}

// peapodEndpoint is a peapod daemon the bench started.
type peapodEndpoint struct {
	rt   runtimeapi.RuntimeServiceClient
	img  runtimeapi.ImageServiceClient
	sock string
	dir  string // root, state, logs
	pid  int    // the daemon's
}

// startPeapodEndpoint is startPeapodDaemonCNI returning the socket too.
// The daemon inherits the bench's environment (PEAPOD_PPROF, ...).
func startPeapodEndpoint(b *testing.B, reg, conflist string) peapodEndpoint {
	return startPeapodEndpointEnv(b, reg, conflist, "", nil)
}

// startPeapodEndpointEnv is startPeapodEndpoint with env added to the
// daemon's environment; instance (a digit) sets a second daemon's bridge,
// subnet and cgroup parent apart from the first's.
func startPeapodEndpointEnv(b *testing.B, reg, conflist, instance string, env []string) peapodEndpoint {
	// The binary gets a directory of its own, as installed binaries have:
	// below it, the state would make libcontainer copy the whole binary for
	// every exec and container start (sandbox/seal).
	binDir, err := os.MkdirTemp("", "peapod-bench-bin-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(binDir) })
	if err := testenv.BuildPeapod("../..", binDir); err != nil {
		b.Fatal(err)
	}
	suffix := strconv.Itoa(os.Getpid()%100000) + instance
	third := os.Getpid()%200 + 20
	if instance != "" {
		third = (third+1+int(instance[0]-'0'))%200 + 20
	}
	// The built-in network unless the bench gave a CNI config.
	network, config := "builtin", ""
	if conflist != "" {
		// The anchors' plugins, whatever /opt/cni/bin holds.
		network, config = "cni", "cni_bin_dirs = [\"/usr/lib/cni\"]\n"
	}
	d := testenv.NewDaemon(b, testenv.DaemonOptions{
		Binary: filepath.Join(binDir, "peapod"),
		Name:   "peapod-bench",
		// An absolute cgroup parent, as the kubelet gives (containerd gets
		// critest's /test.slice), not one nested below the bench's own cgroup.
		CgroupParent: "/peapod-bench-" + suffix,
		Bridge:       "ppb" + suffix,
		PodCIDR:      "10.198." + strconv.Itoa(third) + ".0/24",
		Network:      network,
		Registries:   testenv.MirrorRegistries(reg),
		CNIConflist:  conflist,
		Config:       config,
		Env:          env, // added to the bench's own (PEAPOD_PPROF, ...)
		KillWithTest: true,
		QuietCleanup: true,
	})
	d.Start()
	return peapodEndpoint{rt: d.RT, img: d.Img, sock: d.Socket, dir: d.Dir, pid: d.Cmd.Process.Pid}
}
