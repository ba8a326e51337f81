package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streamPod runs a pod with one container from cfg and returns the ids.
func streamPod(t *testing.T, d *daemon, image string, cfg *runtimeapi.ContainerConfig) (pod, ctr string, podCfg *runtimeapi.PodSandboxConfig) {
	t.Helper()
	c := ctx(t)
	podCfg = podConfig(cfg.Metadata.Name, t.TempDir())
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatal(err)
	}
	return run.PodSandboxId, cr.ContainerId, podCfg
}

// executor opens a SPDY session on a URL the daemon handed out, the way
// the kubelet's proxy and kubectl do.
func executor(t *testing.T, rawURL string) remotecommand.Executor {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: u.Host}, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	return exec
}

type fixedSize struct {
	sizes chan remotecommand.TerminalSize
}

func (f fixedSize) Next() *remotecommand.TerminalSize {
	sz, ok := <-f.sizes
	if !ok {
		return nil
	}
	return &sz
}

// TestStreamingExec: exec over the streaming server with and without a
// TTY, with resize, exit codes, and a missing binary.
func TestStreamingExec(t *testing.T) {
	d, image := readyDaemon(t)
	_, ctr, _ := streamPod(t, d, image, containerConfig("exec", image, "sh", "-c", "cat /proc/self/cgroup > /tmp/init.cgroup; exec sleep 1000"))
	c := ctx(t)

	// The exec'd process is in every cgroup of the container's init (on
	// cgroup v1 it joins them itself: sandbox/execcg; the unified hierarchy
	// of a hybrid host follows a moment later), and sees no descriptor of
	// that machinery.
	cg, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Timeout: 10,
		Cmd: []string{"sh", "-c", "sleep 0.3; cat /proc/self/cgroup; echo ---; cat /tmp/init.cgroup; echo ---; ls -l /proc/$$/fd"}})
	if err != nil || cg.ExitCode != 0 {
		t.Fatalf("exec cgroup check: %v %q", err, cg.GetStderr())
	}
	parts := strings.Split(string(cg.Stdout), "---\n")
	if len(parts) != 3 || parts[0] != parts[1] || !strings.Contains(parts[0], "peapod-"+ctr) {
		t.Errorf("exec cgroups differ from the container init's:\n%s", cg.Stdout)
	}
	if fds := parts[len(parts)-1]; strings.Contains(fds, "memfd") || strings.Contains(fds, "cgroup") {
		t.Errorf("exec'd process holds peapod's descriptors:\n%s", fds)
	}

	// Plain: stdout, stderr, exit code.
	resp, err := d.RT.Exec(c, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 5"}, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = executor(t, resp.Url).StreamWithContext(c, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if ee, ok := err.(interface{ ExitStatus() int }); !ok || ee.ExitStatus() != 5 {
		t.Errorf("exec exit: %v, want exit status 5", err)
	}
	if out.String() != "out\n" || errOut.String() != "err\n" {
		t.Errorf("exec stdout %q stderr %q", out.String(), errOut.String())
	}

	// The URL is single-use.
	if err := executor(t, resp.Url).StreamWithContext(c, remotecommand.StreamOptions{Stdout: io.Discard}); err == nil {
		t.Error("a used exec URL worked a second time")
	}

	// TTY with stdin and resize: the terminal reports the size sent.
	resp, err = d.RT.Exec(c, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"sh", "-c", "read line; busybox stty size; echo got:$line"}, Stdin: true, Stdout: true, Tty: true})
	if err != nil {
		t.Fatal(err)
	}
	sizes := fixedSize{make(chan remotecommand.TerminalSize, 1)}
	sizes.sizes <- remotecommand.TerminalSize{Width: 123, Height: 45}
	stdinR, stdinW := io.Pipe()
	var ttyOut bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- executor(t, resp.Url).StreamWithContext(c, remotecommand.StreamOptions{Stdin: stdinR, Stdout: &ttyOut, Tty: true, TerminalSizeQueue: sizes})
	}()
	time.Sleep(300 * time.Millisecond) // let the resize land before the read returns
	fmt.Fprintln(stdinW, "hello")
	if err := <-done; err != nil {
		t.Errorf("tty exec: %v", err)
	}
	close(sizes.sizes)
	stdinW.Close()
	if got := ttyOut.String(); !strings.Contains(got, "45 123") || !strings.Contains(got, "got:hello") {
		t.Errorf("tty exec output %q: want the size 45 123 and got:hello", got)
	}

	// A missing binary: exit code 127 as a shell would give, with a reason.
	resp, err = d.RT.Exec(c, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"/no/such/tool"}, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	err = executor(t, resp.Url).StreamWithContext(c, remotecommand.StreamOptions{Stdout: io.Discard, Stderr: &errOut})
	if ee, ok := err.(interface{ ExitStatus() int }); !ok || ee.ExitStatus() != 127 {
		t.Errorf("exec of a missing binary: %v, want exit status 127", err)
	}
	if !strings.Contains(errOut.String(), "/no/such/tool") {
		t.Errorf("missing binary: stderr %q does not name it", errOut.String())
	}
	sync, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/no/such/tool"}})
	if err != nil || sync.ExitCode != 127 {
		t.Errorf("ExecSync of a missing binary: %v, exit %d, want 127", err, sync.GetExitCode())
	}
	// A file that is not executable: 126.
	sync, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/etc/passwd"}})
	if err != nil || sync.ExitCode != 126 || !strings.Contains(string(sync.Stderr), "/etc/passwd") {
		t.Errorf("ExecSync of a non-executable file: %v, exit %d, stderr %q; want 126 naming it", err, sync.GetExitCode(), sync.GetStderr())
	}
}

// TestStreamingAttach: two clients attached to one container both see its
// output; stdin from one reaches the container.
func TestStreamingAttach(t *testing.T) {
	d, image := readyDaemon(t)
	cfg := containerConfig("attach", image, "sh", "-c", "while read line; do echo echo:$line; done; echo bye")
	cfg.Stdin = true
	cfg.StdinOnce = true // the first client's EOF closes the container's stdin
	_, ctr, _ := streamPod(t, d, image, cfg)
	c := ctx(t)

	type session struct {
		out  *syncBuffer
		done chan error
	}
	var sessions []session
	stdinR, stdinW := io.Pipe()
	for i := 0; i < 2; i++ {
		resp, err := d.RT.Attach(c, &runtimeapi.AttachRequest{ContainerId: ctr, Stdin: i == 0, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		s := session{out: &syncBuffer{}, done: make(chan error, 1)}
		opts := remotecommand.StreamOptions{Stdout: s.out, Stderr: io.Discard}
		if i == 0 {
			opts.Stdin = stdinR
		}
		go func() { s.done <- executor(t, resp.Url).StreamWithContext(c, opts) }()
		sessions = append(sessions, s)
	}
	time.Sleep(300 * time.Millisecond) // both sessions attached
	fmt.Fprintln(stdinW, "ping")
	waitFor(t, 10*time.Second, "both clients to see the echo", func() bool {
		return strings.Contains(sessions[0].out.String(), "echo:ping") && strings.Contains(sessions[1].out.String(), "echo:ping")
	})
	stdinW.Close() // EOF on the container's stdin: it says bye and exits
	for i, s := range sessions {
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Errorf("attach session %d did not end when the container exited", i)
		}
	}
	waitFor(t, 10*time.Second, "the container to exit", func() bool {
		return containerStatus(t, d, ctr).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStreamingPortForward downloads a 10 MB file from busybox httpd in a
// pod through port-forward and checks it arrives intact.
func TestStreamingPortForward(t *testing.T) {
	d, image := readyDaemon(t)
	cfg := containerConfig("web", image, "sh", "-c",
		"mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1M count=10 2>/dev/null && busybox sha256sum /www/big > /www/sum && httpd -f -p 8080 -h /www")
	pod, ctr, _ := streamPod(t, d, image, cfg)
	c := ctx(t)
	var want string
	// httpd must listen before the first forwarded connection: client-go's
	// forwarder ends the whole forward when one connection is refused.
	waitFor(t, 20*time.Second, "the file, its checksum and httpd", func() bool {
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"wget", "-q", "-O", "-", "http://127.0.0.1:8080/sum"}})
		if err == nil && r.ExitCode == 0 && len(r.Stdout) > 64 {
			want = string(r.Stdout[:64])
			return true
		}
		return false
	})
	resp, err := d.RT.PortForward(c, &runtimeapi.PortForwardRequest{PodSandboxId: pod, Port: []int32{8080}})
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
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, os.Stderr)
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
	var got []byte
	waitFor(t, 20*time.Second, "httpd to answer through the forward", func() bool {
		r, err := http.Get("http://" + local + "/big")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		got, err = io.ReadAll(r.Body)
		return err == nil && r.StatusCode == 200
	})
	sum := sha256.Sum256(got)
	if len(got) != 10<<20 || hex.EncodeToString(sum[:]) != want {
		t.Errorf("forwarded file: %d bytes, sha256 %x; want %d bytes, %s", len(got), sum, 10<<20, want)
	}
}

// TestLogRotation: while a container writes 10,000 numbered lines fast,
// the log is renamed and reopened again and again; every line is present
// exactly once across the rotated files.
func TestLogRotation(t *testing.T) {
	d, image := readyDaemon(t)
	cfg := containerConfig("writer", image, "sh", "-c",
		"i=1; while [ $i -le 10000 ]; do echo line-$i; [ $((i % 500)) = 0 ] && sleep 0.02; i=$((i+1)); done")
	_, ctr, podCfg := streamPod(t, d, image, cfg)
	c := ctx(t)
	logPath := filepath.Join(podCfg.LogDirectory, "writer.log")
	rotations := 0
	for i := 0; ; i++ {
		if containerStatus(t, d, ctr).State == runtimeapi.ContainerState_CONTAINER_EXITED {
			break
		}
		if err := os.Rename(logPath, fmt.Sprintf("%s.%04d", logPath, i)); err == nil {
			if _, err := d.RT.ReopenContainerLog(c, &runtimeapi.ReopenContainerLogRequest{ContainerId: ctr}); err != nil && containerStatus(t, d, ctr).State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Fatalf("reopen: %v", err)
			}
			rotations++
		}
		time.Sleep(15 * time.Millisecond)
	}
	if rotations < 3 {
		t.Fatalf("only %d rotations happened while the container wrote", rotations)
	}
	files, _ := filepath.Glob(logPath + "*")
	seen := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if fields := strings.SplitN(line, " ", 4); len(fields) == 4 {
				seen[fields[3]]++
			}
		}
	}
	for i := 1; i <= 10000; i++ {
		if n := seen[fmt.Sprintf("line-%d", i)]; n != 1 {
			t.Fatalf("line-%d appears %d times across %d files (%d rotations)", i, n, len(files), rotations)
		}
	}
	t.Logf("%d rotations, %d files, 10000 lines each exactly once", rotations, len(files))

	if _, err := d.RT.ReopenContainerLog(c, &runtimeapi.ReopenContainerLogRequest{ContainerId: ctr}); grpcCode(err) != "FailedPrecondition" {
		t.Errorf("reopen of an exited container: %v, want FailedPrecondition", err)
	}
}

// TestStreamingTLS: with stream_tls_cert/key the streaming URLs are https
// and exec works over TLS; a client that does not trust the certificate
// is refused.
func TestStreamingTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedCert(t)
	cert, key := filepath.Join(dir, "stream.crt"), filepath.Join(dir, "stream.key")
	conf := filepath.Join(dir, "peapod.toml")
	for p, data := range map[string][]byte{cert: certPEM, key: keyPEM,
		conf: fmt.Appendf(nil, "stream_tls_cert = %q\nstream_tls_key = %q\n", cert, key)} {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.Args = []string{"--config", conf}
	d.Start()
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	_, ctr, _ := streamPod(t, d, image, containerConfig("tls", image, "sleep", "1000"))
	exec := func(tlsCfg rest.TLSClientConfig) (string, error) {
		resp, err := d.RT.Exec(c, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"echo", "over-tls"}, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(resp.Url, "https://") {
			t.Fatalf("exec URL %q is not https", resp.Url)
		}
		u, _ := url.Parse(resp.Url)
		ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: "https://" + u.Host, TLSClientConfig: tlsCfg}, "POST", u)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = ex.StreamWithContext(c, remotecommand.StreamOptions{Stdout: &out})
		return out.String(), err
	}
	if out, err := exec(rest.TLSClientConfig{CAData: certPEM, ServerName: "localhost"}); err != nil || out != "over-tls\n" {
		t.Errorf("exec over TLS: %q, %v", out, err)
	}
	if _, err := exec(rest.TLSClientConfig{ServerName: "localhost"}); err == nil {
		t.Error("a client that does not trust the certificate was served")
	}
}

// selfSignedCert makes a certificate for localhost and 127.0.0.1.
func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "peapod streaming test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
