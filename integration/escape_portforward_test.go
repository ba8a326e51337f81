package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listenNoAccept listens on 127.0.0.1:port in the network namespace at
// nsPath with an accept queue of one, and never accepts: once the queue is
// full the kernel drops further SYNs, so connects hang (about 2 minutes of
// SYN retries). Any container can do this to its own port, unprivileged.
func listenNoAccept(t *testing.T, nsPath string, port int) {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := os.Open(nsPath)
		if err != nil {
			res <- result{-1, err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- result{-1, err}
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		}
		if err == nil {
			err = unix.Listen(fd, 0)
		}
		res <- result{fd, err}
	}()
	r := <-res
	if r.err != nil {
		t.Fatalf("listen in the pod's network namespace: %v", r.err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
}

func threadsOf(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("no Threads: in /proc/%d/status", pid)
	return 0
}

// TestEscapePortForwardHang: port-forward streams to a pod port whose
// SYNs are dropped (a listener that never accepts) each held one of the
// daemon's OS threads for the whole connect (the dial ran on a thread
// switched into the pod's network namespace): a user allowed to
// port-forward to their own pod could pile up threads until Go's limit of
// 10,000 kills the daemon, and with it every pod's runtime. Now only the
// socket is made on such a thread; the connect waits in the poller.
func TestEscapePortForwardHang(t *testing.T) {
	const streams = 150
	d, image := readyDaemon(t)
	pod, _, _ := streamPod(t, d, image, containerConfig("pf-hang", image, "sleep", "300"))
	c := ctx(t)
	st, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Netns string `json:"netns"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Netns == "" {
		t.Fatalf("pod netns from the verbose status: %v %q", err, st.Info["info"])
	}
	const port = 9999
	listenNoAccept(t, info.Netns, port)

	resp, err := d.RT.PortForward(c, &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{port}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(resp.Url)
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fwDone := make(chan error, 1)
	go func() { fwDone <- fw.ForwardPorts() }()
	defer func() { close(stop); <-fwDone }()
	select {
	case <-ready:
	case err := <-fwDone:
		t.Fatalf("port forward: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("port forward not ready")
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("forwarded ports: %v %v", ports, err)
	}
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
	pid := d.Cmd.Process.Pid
	before := threadsOf(t, pid)
	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for i := 0; i < streams; i++ {
		cn, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
	}
	// The forwarder opens a stream pair per connection; give the daemon
	// time to start every dial (they hang ~2 minutes).
	peak := before
	deadline := time.Now().Add(8 * time.Second * timeoutScale)
	for time.Now().Before(deadline) {
		peak = max(peak, threadsOf(t, pid))
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("daemon threads: %d before %d hanging port-forward dials, at most %d during", before, streams, peak)
	if peak-before > 40 {
		t.Errorf("the daemon grew by %d threads for %d hanging port-forward dials: each dial holds a thread", peak-before, streams)
	}
}
