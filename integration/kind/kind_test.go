// Package kind is `make e2e-kind`: checks through the API server of the
// kind cluster `make kind` made (a node whose runtime is peapod), with
// kubectl: Deployments, logs -f, exec -it, port-forward, cp, debug, Service
// DNS through CoreDNS, NodePort, Jobs, OOM kills, and that a deleted pod
// leaves nothing on the node. It prints "e2e-kind: N passed, N failed" and
// is skipped when no cluster's kubeconfig is there.
package kind

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/peapod-cri/peapod/integration/testenv"
)

var (
	kubeconfig = envOr("KIND_KUBECONFIG", "/var/lib/peapod-kind/kubeconfig")
	kubectlBin = envOr("KUBECTL", "/var/cache/peapod-test/kubernetes-v1.37.2/kubectl")
	node       = envOr("KIND_NODE", "peapod-control-plane")
	// containersConf gives podman runc and ulimits root can have (make kind's).
	containersConf = envOr("CONTAINERS_CONF", "../../contrib/kind/containers.conf")
)

// The test image: Debian's busybox (testenv) with tar for kubectl cp,
// loaded into the node's peapod as a kind user would (peapod image import).
const image = "registry.k8s.io/e2e-kind/busybox:1"

var passed, failed int

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	code := m.Run()
	if passed+failed > 0 {
		fmt.Printf("e2e-kind: %d passed, %d failed\n", passed, failed)
	}
	os.Exit(code)
}

// kubectl runs kubectl against the cluster; it returns combined output.
func kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// onNode runs a command in the node container.
func onNode(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", append([]string{"exec", node}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+containersConf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman exec %s %s: %v\n%s", node, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

type cluster struct {
	t  *testing.T
	ns string
}

func (c *cluster) k(ctx context.Context, args ...string) string {
	c.t.Helper()
	out, err := kubectl(ctx, append([]string{"-n", c.ns}, args...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *cluster) apply(ctx context.Context, manifest string) {
	c.t.Helper()
	cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", kubeconfig, "-n", c.ns, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(strings.ReplaceAll(manifest, "IMAGE", image))
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

func pod(name, cmd string, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {app: %s}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: IMAGE
    command: ["sh", "-c", %q]
%s`, name, name, cmd, extra)
}

func TestKind(t *testing.T) {
	if _, err := os.Stat(kubeconfig); err != nil {
		t.Skipf("no kind cluster (%v): make kind first", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := kubectl(ctx, "get", "--raw", "/readyz"); err != nil {
		t.Fatalf("the API server does not answer: %v", err)
	}
	loadImage(ctx, t)
	c := &cluster{t: t, ns: fmt.Sprintf("e2e-kind-%d", time.Now().Unix())}
	if _, err := kubectl(ctx, "create", "namespace", c.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if out, err := kubectl(ctx, "delete", "namespace", c.ns, "--wait=true", "--timeout=150s"); err != nil {
			t.Errorf("delete namespace %s: %v\n%s", c.ns, err, out)
		}
	})
	for _, tc := range []struct {
		name string
		fn   func(context.Context, *cluster)
	}{
		{"Deployment3Available", deployment},
		{"ClusterIPServiceByDNS", clusterIPByDNS},
		{"NodePort", nodePort},
		{"LogsFollow", logsFollow},
		{"ExecTTY", execTTY},
		{"PortForward", portForward},
		{"Cp", cp},
		{"DebugSharesTargetPIDNamespace", debug},
		{"JobCompletes", job},
		{"OOMKilled", oomKilled},
		{"DeletedPodLeavesNothing", deletedPodLeavesNothing},
	} {
		ok := t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
			defer cancel()
			tc.fn(ctx, &cluster{t: t, ns: c.ns})
		})
		if ok {
			passed++
		} else {
			failed++
		}
	}
}

// loadImage builds the test image as a docker-archive, copies it into the
// node and imports it with `peapod image import`: the README's way for
// kind users (kind load needs containerd's ctr).
func loadImage(ctx context.Context, t *testing.T) {
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t)+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox: %v\n%s", err, out)
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin", "tar")); err != nil {
		t.Fatal(err)
	}
	img, err := testenv.BuildImage(root, testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := tarball.WriteToFile(archive, must(name.NewTag(image)), img); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "podman", "cp", archive, node+":/tmp/e2e-kind-busybox.tar")
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+containersConf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podman cp: %v\n%s", err, out)
	}
	out, err := onNode(ctx, "peapod", "image", "import", "--config", "/etc/peapod/peapod.toml", "/tmp/e2e-kind-busybox.tar")
	if err != nil || !strings.Contains(out, image) {
		t.Fatalf("peapod image import in the node: %v\n%s", err, out)
	}
	onNode(ctx, "rm", "-f", "/tmp/e2e-kind-busybox.tar") //nolint:errcheck
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: IMAGE
        command: ["sh", "-c", "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
`

// ensureWeb makes the 3-replica Deployment "web" and its Services.
func ensureWeb(ctx context.Context, c *cluster) {
	c.apply(ctx, webDeployment+`---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`)
	c.k(ctx, "wait", "--for=condition=Available", "deployment/web", "--timeout=180s")
}

func deployment(ctx context.Context, c *cluster) {
	ensureWeb(ctx, c)
	if got := c.k(ctx, "get", "deployment/web", "-o", "jsonpath={.status.availableReplicas}"); got != "3" {
		c.t.Fatalf("availableReplicas = %q; want 3", got)
	}
	ips := strings.Fields(c.k(ctx, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"))
	if len(ips) != 3 {
		c.t.Fatalf("pod IPs %v; want 3", ips)
	}
	for _, ip := range ips {
		if !strings.HasPrefix(ip, "10.244.0.") {
			c.t.Errorf("pod IP %s is not in the node's pod range 10.244.0.0/24", ip)
		}
	}
}

// waitPod waits for a pod's phase or condition (kubectl wait --for=...).
func (c *cluster) waitPod(ctx context.Context, name, cond string) {
	c.t.Helper()
	c.k(ctx, "wait", "--for="+cond, "pod/"+name, "--timeout=120s")
}

func clusterIPByDNS(ctx context.Context, c *cluster) {
	ensureWeb(ctx, c)
	c.apply(ctx, pod("dns-client", "sleep 3600", ""))
	c.waitPod(ctx, "dns-client", "condition=Ready")
	want := "served-by-web-"
	for _, host := range []string{"web", "web." + c.ns + ".svc.cluster.local"} {
		var out string
		var err error
		// Endpoints reach kube-proxy's rules a moment after Available.
		for i := 0; i < 30; i++ {
			// nc, not busybox's wget, which crashes on some of its flags here.
			out, err = kubectl(ctx, "-n", c.ns, "exec", "dns-client", "--", "sh", "-c",
				`printf 'GET / HTTP/1.0\r\nHost: `+host+`\r\n\r\n' | nc -w 3 `+host+` 80`)
			if err == nil && strings.Contains(out, want) {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil || !strings.Contains(out, want) {
			c.t.Errorf("GET http://%s/ from another pod = %q, %v; want %q", host, out, err, want)
		}
	}
	out, err := kubectl(ctx, "-n", c.ns, "exec", "dns-client", "--", "nslookup", "web."+c.ns+".svc.cluster.local")
	clusterIP := c.k(ctx, "get", "svc/web", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil || !strings.Contains(out, clusterIP) {
		c.t.Errorf("nslookup through CoreDNS = %q, %v; want the ClusterIP %s", out, err, clusterIP)
	}
}

func nodePort(ctx context.Context, c *cluster) {
	ensureWeb(ctx, c)
	port := c.k(ctx, "get", "svc/web-nodeport", "-o", "jsonpath={.spec.ports[0].nodePort}")
	nodeIP := c.k(ctx, "get", "node", node, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`)
	url := "http://" + nodeIP + ":" + port + "/"
	var body string
	var err error
	client := &http.Client{Timeout: 3 * time.Second}
	for i := 0; i < 30; i++ {
		var resp *http.Response
		if resp, err = client.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); strings.Contains(body, "served-by-web-") {
				return
			}
		}
		time.Sleep(time.Second)
	}
	c.t.Errorf("GET %s from the host = %q, %v; want a web pod's page", url, body, err)
}

func logsFollow(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("logger", "for i in 1 2 3 4 5; do echo line-$i; sleep 1; done", ""))
	c.waitPod(ctx, "logger", "jsonpath={.status.phase}=Running")
	// logs -f streams while the container writes and ends when it exits.
	start := time.Now()
	out := c.k(ctx, "logs", "-f", "logger")
	for i := 1; i <= 5; i++ {
		if !strings.Contains(out, fmt.Sprintf("line-%d", i)) {
			c.t.Errorf("logs -f = %q; want line-1..line-5", out)
			break
		}
	}
	if time.Since(start) < 2*time.Second {
		c.t.Errorf("logs -f returned after %s: it did not follow the running container", time.Since(start))
	}
}

func execTTY(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("shell", "sleep 3600", ""))
	c.waitPod(ctx, "shell", "condition=Ready")
	// script(1) gives kubectl a terminal, so -t allocates one in the container.
	line := fmt.Sprintf("%s --kubeconfig %s -n %s exec -it shell -- sh -c '[ -t 0 ] && [ -t 1 ] && echo is-a-tty; echo answer-$((6*7)); exit 3'", kubectlBin, kubeconfig, c.ns)
	out, err := exec.CommandContext(ctx, "script", "-qec", line, "/dev/null").CombinedOutput()
	var exit *exec.ExitError
	if !strings.Contains(string(out), "is-a-tty") || !strings.Contains(string(out), "answer-42") {
		c.t.Errorf("exec -it = %q, %v; want a tty and the command's output", out, err)
	}
	if !asExit(err, &exit) || exit.ExitCode() != 3 {
		c.t.Errorf("exec -it exit = %v; want the command's status 3", err)
	}
	if out := c.k(ctx, "exec", "-i", "shell", "--", "cat"); out != "" {
		c.t.Errorf("exec -i with empty stdin = %q", out)
	}
}

func asExit(err error, exit **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*exit = e
	return ok
}

func portForward(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("pf", "mkdir -p /www && echo forwarded-ok > /www/index.html && exec httpd -f -p 8080 -h /www", ""))
	c.waitPod(ctx, "pf", "condition=Ready")
	cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", kubeconfig, "-n", c.ns, "port-forward", "pod/pf", ":8080")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }() //nolint:errcheck
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
	sc := bufio.NewScanner(stdout)
	var port string
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			port = m[1]
			break
		}
	}
	if port == "" {
		c.t.Fatal("port-forward printed no local port")
	}
	go io.Copy(io.Discard, stdout) //nolint:errcheck
	for i := 0; i < 3; i++ {       // several connections through one forward
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			c.t.Fatalf("GET through port-forward: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "forwarded-ok") {
			c.t.Fatalf("GET through port-forward = %q", b)
		}
	}
}

func cp(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("files", "sleep 3600", ""))
	c.waitPod(ctx, "files", "condition=Ready")
	dir := c.t.TempDir()
	src := filepath.Join(dir, "in.txt")
	content := strings.Repeat("copied through kubectl cp\n", 1000)
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.k(ctx, "cp", src, "files:/tmp/in.txt")
	if got := c.k(ctx, "exec", "files", "--", "wc", "-c", "/tmp/in.txt"); !strings.HasPrefix(strings.TrimSpace(got), fmt.Sprint(len(content))) {
		c.t.Errorf("in the pod: wc -c = %q; want %d bytes", got, len(content))
	}
	back := filepath.Join(dir, "back.txt")
	c.k(ctx, "cp", "files:/tmp/in.txt", back)
	if got, err := os.ReadFile(back); err != nil || string(got) != content {
		c.t.Errorf("copied back: %d bytes, %v; want the same %d bytes", len(got), err, len(content))
	}
}

func debug(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("target", "exec sleep 3600", ""))
	c.waitPod(ctx, "target", "condition=Ready")
	c.k(ctx, "debug", "pod/target", "-c", "dbg", "--image="+image, "--target=main", "--profile=general",
		"--", "sh", "-c", "ps; sleep 3600")
	var out string
	for i := 0; i < 60; i++ {
		out, _ = kubectl(ctx, "-n", c.ns, "logs", "target", "-c", "dbg")
		if strings.Contains(out, "sleep 3600") {
			break
		}
		time.Sleep(time.Second)
	}
	// The target's sleep, as PID 1 of the shared namespace, next to the
	// debug container's own ps.
	if !regexp.MustCompile(`(?m)^\s*1\s.*sleep 3600`).MatchString(out) || !strings.Contains(out, "ps") {
		c.t.Errorf("ps in the ephemeral container = %q; want the target's sleep as PID 1", out)
	}
	if got := c.k(ctx, "get", "pod/target", "-o", "jsonpath={.status.ephemeralContainerStatuses[0].state.running}"); got == "" {
		c.t.Errorf("ephemeral container not running: %s", c.k(ctx, "get", "pod/target", "-o", "jsonpath={.status.ephemeralContainerStatuses}"))
	}
}

func job(ctx context.Context, c *cluster) {
	c.apply(ctx, `apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  completions: 2
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: IMAGE
        command: ["sh", "-c", "echo job-done"]
`)
	c.k(ctx, "wait", "--for=condition=Complete", "job/work", "--timeout=180s")
	if got := c.k(ctx, "get", "job/work", "-o", "jsonpath={.status.succeeded}"); got != "2" {
		c.t.Errorf("job succeeded = %q; want 2", got)
	}
	if out := c.k(ctx, "logs", "job/work"); !strings.Contains(out, "job-done") {
		c.t.Errorf("job logs = %q", out)
	}
}

func oomKilled(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("oom", "exec dd if=/dev/zero of=/dev/null bs=200M count=1", `    resources:
      limits: {memory: 32Mi}
`))
	c.waitPod(ctx, "oom", "jsonpath={.status.phase}=Failed")
	reason := c.k(ctx, "get", "pod/oom", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason}")
	code := c.k(ctx, "get", "pod/oom", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}")
	if reason != "OOMKilled" || code != "137" {
		c.t.Errorf("OOM-killed container: reason %q, exit code %q; want OOMKilled, 137", reason, code)
	}
}

func deletedPodLeavesNothing(ctx context.Context, c *cluster) {
	c.apply(ctx, pod("gone", "sleep 3600", ""))
	c.waitPod(ctx, "gone", "condition=Ready")
	uid := c.k(ctx, "get", "pod/gone", "-o", "jsonpath={.metadata.uid}")
	ctr := c.k(ctx, "get", "pod/gone", "-o", "jsonpath={.status.containerStatuses[0].containerID}")
	ctr = ctr[strings.Index(ctr, "://")+3:]
	podID, err := onNode(ctx, "crictl", "pods", "-q", "--label", "io.kubernetes.pod.uid="+uid)
	podID = strings.TrimSpace(podID)
	if err != nil || podID == "" {
		c.t.Fatalf("crictl pods for %s: %q, %v", uid, podID, err)
	}
	c.k(ctx, "delete", "pod", "gone", "--wait=true", "--timeout=60s")
	// The kubelet removes the stopped sandbox of a deleted pod on its next
	// garbage collection (every minute).
	var left string
	for i := 0; i < 150; i++ {
		left = leftOnNode(ctx, c, uid, podID, ctr)
		if left == "" {
			return
		}
		time.Sleep(time.Second)
	}
	c.t.Errorf("left on the node after the pod's deletion:\n%s", left)
}

// leftOnNode lists what of a pod is still on the node: the sandbox and
// container in peapod, their processes, mounts, cgroups, state files and
// the pod's address.
func leftOnNode(ctx context.Context, c *cluster, uid, podID, ctr string) string {
	uidUnderscore := strings.ReplaceAll(uid, "-", "_")
	script := fmt.Sprintf(`
crictl pods -q --id %[1]s | sed 's/^/sandbox /'
crictl ps -aq --id %[2]s | sed 's/^/container /'
grep -e %[1]s -e %[2]s /proc/self/mountinfo | awk '{print "mount " $5}'
find /sys/fs/cgroup -maxdepth 6 -type d \( -name '*%[3]s*' -o -name '*%[4]s*' -o -name '*%[1]s*' -o -name '*%[2]s*' \) 2>/dev/null | sed 's/^/cgroup /'
find /run/peapod /var/lib/peapod -maxdepth 4 \( -name '*%[1]s*' -o -name '*%[2]s*' \) 2>/dev/null | sed 's/^/file /'
grep -rl %[1]s /var/lib/peapod/network 2>/dev/null | sed 's/^/address record /'
for p in /proc/[0-9]*; do [ "${p#/proc/}" = $$ ] && continue; grep -qs -e %[1]s -e %[2]s $p/cmdline $p/cgroup && echo "process ${p#/proc/}"; done
true`, podID, ctr, uid, uidUnderscore)
	out, err := onNode(ctx, "sh", "-c", script)
	if err != nil {
		c.t.Fatalf("inspect the node: %v", err)
	}
	return strings.TrimSpace(out)
}
