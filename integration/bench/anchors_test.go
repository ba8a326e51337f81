package bench

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The anchors of `make bench` besides Debian's containerd 1.6: containerd
// 2.4.2 and CRI-O 1.36.3, built from the Go module proxy by
// build-anchors.sh into anchorCache (one directory per version), and
// crictl, which drives the 50-pod density as ../shared/critest's
// measure-density.sh does.
const (
	containerd2Version = "v2.4.2"
	crioVersion        = "v1.36.3"
	crictlVersion      = "v1.36.0"
)

//go:embed containerd2.toml.tmpl
var containerd2Config string

//go:embed crio.conf.tmpl
var crioConfig string

// anchorCache is where build-anchors.sh keeps what it builds
// (ANCHOR_CACHE, default /var/cache/peapod-test).
func anchorCache() string {
	if d := os.Getenv("ANCHOR_CACHE"); d != "" {
		return d
	}
	return "/var/cache/peapod-test"
}

func containerd2Bin() string {
	return filepath.Join(anchorCache(), "containerd-"+containerd2Version, "containerd")
}
func crioDir() string { return filepath.Join(anchorCache(), "crio-"+crioVersion) }
func crictlBin() string {
	if p := os.Getenv("CRICTL"); p != "" {
		return p
	}
	return filepath.Join(anchorCache(), "crictl-"+crictlVersion)
}

// ensureAnchors runs build-anchors.sh unless everything it builds is in
// the cache already (the first run on a machine: a few minutes).
func ensureAnchors(b *testing.B) {
	need := []string{containerd2Bin(), containerd2Bin() + "-shim-runc-v2", filepath.Join(crioDir(), "crio"),
		filepath.Join(crioDir(), "pinns"), filepath.Join(crioDir(), "hostclamp"), crictlBin()}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			fmt.Printf("anchors: %s missing, running build-anchors.sh (Go module proxy, a few minutes)\n", p)
			cmd := exec.Command("./build-anchors.sh")
			cmd.Env = append(os.Environ(), "ANCHOR_CACHE="+anchorCache())
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				b.Fatalf("build-anchors.sh: %v", err)
			}
			return
		}
	}
}

// crioEndpoint is a private CRI-O's CRI services.
type crioEndpoint struct {
	rt   runtimeapi.RuntimeServiceClient
	img  runtimeapi.ImageServiceClient
	sock string
	dir  string
	pid  int // crio's (tini's child)
}

// startCRIO starts CRI-O on its own socket, storage, state and config in
// a temp dir (nothing under /etc/crio, /etc/containers, /var/lib/containers
// or /var/run/crio), as ../shared/critest/start-crio.sh does: cgroupfs,
// conmon and runc from Debian behind hostclamp, conflist as its only CNI
// network with Debian's plugins, reg reachable over plain HTTP,
// sandboxImage as its pause image. It runs under `tini -s`: this
// machine's PID 1 reaps orphans only every second or so, and conmon is an
// orphan. Stopped by PID in b.Cleanup, after its pods are removed; leftover
// conmons (named by the directory in their arguments) are killed by PID.
func startCRIO(b *testing.B, reg, sandboxImage, conflist string) crioEndpoint {
	bins := crioDir()
	runc, err := exec.LookPath("runc")
	if err != nil {
		b.Fatalf("runc: %v (apt-get install runc)", err)
	}
	conmon, err := exec.LookPath("conmon")
	if err != nil {
		b.Fatalf("conmon: %v (apt-get install conmon)", err)
	}
	tini, err := exec.LookPath("tini")
	if err != nil {
		b.Fatalf("tini: %v (apt-get install tini)", err)
	}
	dir, err := os.MkdirTemp("", "crio-bench-")
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "crio.sock")
	for _, d := range []string{"root", "runroot", "logs", "run/exits", "run/ns", "hooks.d", "cdi", "keys", "policies", "conf.d", "registries.d", "cni/net.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var named struct{ Name string }
	if err := json.Unmarshal([]byte(conflist), &named); err != nil || named.Name == "" {
		b.Fatalf("crio: conflist without a name: %v", err)
	}
	network := named.Name // CRI-O's cni_default_network
	conf := strings.NewReplacer("@DIR@", dir, "@SOCK@", sock, "@PINNS@", filepath.Join(bins, "pinns"),
		"@HOSTCLAMP@", filepath.Join(bins, "hostclamp"), "@CONMON@", conmon, "@RUNC@", runc,
		"@SANDBOX_IMAGE@", sandboxImage, "@NETWORK@", network, "@CNI_BIN@", "/usr/lib/cni").Replace(crioConfig)
	files := map[string]string{
		"crio.conf":                   conf,
		"registries.conf":             fmt.Sprintf("unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n\n[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n", reg, reg),
		"storage.conf":                fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "runroot")),
		"policy.json":                 `{"default": [{"type": "insecureAcceptAnything"}]}`,
		"cni/net.d/10-bench.conflist": conflist,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "crio.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(tini, "-s", "--", filepath.Join(bins, "crio"), "--config", filepath.Join(dir, "crio.conf"),
		"--config-dir", filepath.Join(dir, "conf.d"), "--registries-conf", filepath.Join(dir, "registries.conf"),
		"--registries-conf-dir", filepath.Join(dir, "registries.d"))
	cmd.Env = append(os.Environ(), "CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"))
	exited := startDaemon(b, cmd, logf)
	b.Cleanup(func() {
		if b.Failed() {
			// Kept for a look after the run: the directory goes below.
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("crio-bench-%d.log", os.Getpid()))
			exec.Command("cp", filepath.Join(dir, "crio.log"), keep).Run()
			b.Logf("crio's log: %s", keep)
		}
		stopByPID(cmd, exited, 20*time.Second) // tini forwards SIGTERM to crio
		killLeftovers(dir, sock)
		unmountUnder(dir)
		os.RemoveAll(dir)
	})
	conn := dial(b, sock)
	ep := crioEndpoint{rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn), sock: sock, dir: dir}
	b.Cleanup(func() { removeAllPods(ep.rt) })
	deadline := time.Now().Add(scaled(60 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := ep.rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "crio.log"))
			b.Fatalf("crio exited:\n%s", tail(log, 4000))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "crio.log"))
			b.Fatalf("crio did not answer in %v: %v\n%s", scaled(60*time.Second), err, tail(log, 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range allProcesses() {
		if p.ppid == cmd.Process.Pid {
			ep.pid = p.pid
		}
	}
	if ep.pid == 0 {
		b.Fatal("crio: no child of tini")
	}
	return ep
}

// removeAllPods stops (without grace) and removes every pod the runtime
// lists: what a failed bench left behind, before its daemon stops.
func removeAllPods(rt runtimeapi.RuntimeServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err == nil {
		for _, c := range ctrs.Containers {
			rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: 0})
		}
	}
	pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
		rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
	}
}

// killLeftovers SIGKILLs, by PID, the processes whose command line names
// one of marks (an anchor's private directory or socket): shims and
// conmons a stopped daemon left, with the containers below them.
func killLeftovers(marks ...string) {
	for _, p := range allProcesses() {
		if p.pid == os.Getpid() {
			continue
		}
		for _, m := range marks {
			if m != "" && strings.Contains(p.cmdline, m) {
				syscall.Kill(p.pid, syscall.SIGKILL)
				break
			}
		}
	}
}
