package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The reference runtime of the stock-kubelet test: with
// PEAPOD_E2E_RUNTIME=containerd the same checks run on Debian's containerd
// 1.6 (runc, CNI bridge + host-local + portmap), to show that what they
// expect is what containerd does.

const containerdBinary = "/usr/bin/containerd"

const containerdKubeletConfig = `version = 2
root = "@DIR@/root"
state = "@DIR@/state"

[grpc]
  address = "@SOCK@"

[ttrpc]
  address = "@SOCK@.ttrpc"

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "@DIR@/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "@SANDBOX_IMAGE@"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    disable_apparmor = true
    restrict_oom_score_adj = true

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "@DIR@/runc"

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "@DIR@/cni/net.d"

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "@DIR@/hosts.d"
`

// registry.k8s.io resolves to the test registry (through the pull counter).
const containerdMirror = `server = "https://registry.k8s.io"

[host."http://@REGISTRY@"]
  capabilities = ["pull", "resolve"]
`

// No ipMasq: pods need no way out; portmap for host ports (with its
// 127.0.0.1 SNAT, which sets route_localnet on the bridge).
const containerdConflist = `{
  "cniVersion": "0.4.0",
  "name": "e2e-kubelet",
  "plugins": [
    {"type": "bridge", "bridge": "@BRIDGE@", "isGateway": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "@CIDR@"}]], "dataDir": "@DIR@/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

type containerdRuntime struct {
	socket, dir string
	rt          runtimeapi.RuntimeServiceClient
	img         runtimeapi.ImageServiceClient
}

// startContainerdRuntime starts a private containerd (socket, root, state,
// runc root, CNI config and IPAM in a temp dir; its own bridge and /24).
// Cleanup removes its pods through CRI, stops it by PID, and removes its
// mounts, bridge and the iptables tables portmap created.
func startContainerdRuntime(t *testing.T, registry, sandboxImage string) *containerdRuntime {
	t.Helper()
	if _, err := os.Stat(containerdBinary); err != nil {
		if out, err := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "containerd", "containernetworking-plugins").CombinedOutput(); err != nil {
			t.Skipf("containerd not installed and apt-get failed: %v\n%s", err, out)
		}
	}
	dir, err := os.MkdirTemp("", "containerd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerdRuntime{socket: filepath.Join(dir, "containerd.sock"), dir: dir}
	bridge := "ppk" + randomSuffix()
	guardBridge(t, bridge)
	tablesBefore, _ := exec.Command("nft", "list", "tables").Output()
	render := strings.NewReplacer("@DIR@", dir, "@SOCK@", c.socket, "@REGISTRY@", registry,
		"@SANDBOX_IMAGE@", sandboxImage, "@BRIDGE@", bridge, "@CIDR@", freePodCIDR(t)).Replace
	files := map[string]string{
		"config.toml":                        containerdKubeletConfig,
		"hosts.d/registry.k8s.io/hosts.toml": containerdMirror,
		"cni/net.d/10-e2e.conflist":          containerdConflist,
	}
	for name, tmpl := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(render(tmpl)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "containerd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(containerdBinary, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.rt, c.img = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	t.Cleanup(func() {
		// Pods first: runc shims outlive containerd.
		cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if resp, err := c.rt.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range resp.Items {
				c.rt.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				if _, err := c.rt.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
					t.Errorf("containerd cleanup: remove pod %s: %v", p.Id, err)
				}
			}
		}
		cancel()
		conn.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("containerd log:\n%s", tail(string(log), 40))
		}
		m := mountsUnder(dir)
		for i := len(m) - 1; i >= 0; i-- {
			syscall.Unmount(m[i], syscall.MNT_DETACH)
		}
		exec.Command("ip", "link", "del", bridge).Run()
		// portmap's iptables(-nft) chains: drop the tables it created.
		for _, table := range []string{"ip nat", "ip filter", "ip mangle", "ip6 nat", "ip6 filter", "ip6 mangle"} {
			if !strings.Contains(string(tablesBefore), "table "+table+"\n") {
				exec.Command("nft", append([]string{"delete", "table"}, strings.Fields(table)...)...).Run()
			}
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		vctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.rt.Version(vctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return c
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("containerd exited:\n%s", tail(string(log), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer in 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
