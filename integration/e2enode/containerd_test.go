package e2enode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The reference: the same suite on containerd 2.x (E2E_NODE_RUNTIME=
// containerd), built from the Go module proxy as
// ../shared/critest/build-containerd2.sh does, configured as containerd's
// own node e2e job is (runtime handlers runc and test-handler), with
// Debian's runc and CNI plugins, inside the same private namespaces.

// containerdConfig is config version 3 (containerd 2.x); %[1]s the
// directory, %[2]s runc, %[3]s the sandbox image.
const containerdConfig = `version = 3
root = "%[1]s/root"
state = "%[1]s/state"
oom_score = 0
[grpc]
  address = "%[1]s/containerd.sock"
[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "%[1]s/opt"
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "%[3]s"
    [plugins."io.containerd.cri.v1.images".registry]
      config_path = "%[1]s/hosts.d"
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
          BinaryName = "%[2]s"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.test-handler]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.test-handler.options]
          SystemdCgroup = false
          BinaryName = "%[2]s"
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "%[1]s/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
  [plugins."io.containerd.nri.v1.nri"]
    disable = true
`

const containerdCNI = `{
  "cniVersion": "1.0.0",
  "name": "e2e-node",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "%s/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
`

type containerd struct {
	dir, socket, pidFile string
	cmd                  *exec.Cmd
	exited               chan struct{}
}

func startContainerd(t *testing.T, work, reg, reportDir string) *containerd {
	binDir := env("E2E_NODE_CONTAINERD", "/var/cache/peapod-test/containerd-v2.4.2") // containerd 2.4.2, as docs/performance.md builds it
	bin := filepath.Join(binDir, "containerd")
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("containerd needs Debian's runc: %v", err)
	}
	dir := filepath.Join(work, "containerd")
	c := &containerd{dir: dir, socket: filepath.Join(dir, "containerd.sock"), pidFile: filepath.Join(dir, "containerd.pid")}
	for _, d := range []string{"root", "state", "opt", "cni/net.d", "cni/ipam"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"config.toml":                    fmt.Sprintf(containerdConfig, dir, runc, "registry.k8s.io/pause:3.10.2"),
		"cni/net.d/10-e2e-node.conflist": fmt.Sprintf(containerdCNI, dir),
	}
	for _, r := range []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io", "docker.io", "quay.io", reg} {
		files["hosts.d/"+r+"/hosts.toml"] = fmt.Sprintf("server = \"http://%[1]s\"\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg)
	}
	for f, content := range files {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(reportDir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.cmd = exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH")) // its shim
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()
	os.WriteFile(c.pidFile, []byte(strconv.Itoa(c.cmd.Process.Pid)), 0o644)
	t.Cleanup(func() { c.destroy(t) })

	d := &daemon{socket: c.socket}
	rt, done := d.client(t)
	defer done()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			t.Logf("containerd %s on %s", v.RuntimeVersion, c.socket)
			return c
		}
		select {
		case <-c.exited:
			t.Fatalf("containerd exited: see %s", logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer Version in 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// destroy removes the pods left, stops containerd and ends the shims it
// started (found by the state directory in their command line).
func (c *containerd) destroy(t *testing.T) {
	select {
	case <-c.exited:
	default:
		d := &daemon{socket: c.socket}
		rt, done := d.client(t)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		if resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range resp.Items {
				rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
					t.Errorf("cleanup: remove pod %s: %v", p.Id, err)
				}
			}
		}
		cancel()
		done()
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, _ := os.ReadFile(p)
		if strings.Contains(string(cmdline), "containerd-shim") && strings.Contains(string(cmdline), c.dir) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				t.Logf("cleanup: shim %d left: killed", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}
