package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// ---------------------------------------------------------------- containerd

// containerdEndpoint is a private containerd's CRI services.
type containerdEndpoint struct {
	img  runtimeapi.ImageServiceClient
	rt   runtimeapi.RuntimeServiceClient
	sock string // named in the command line of its shims
	dir  string // root of its config, hosts.d, state
	pid  int    // the daemon's
}

// startContainerd starts Debian's containerd (installed with apt-get if
// missing) on its own socket, root and state in a temp dir, pulling from
// reg over plain HTTP, with sandboxImage as its pause image (benches that
// run no pod pass ""). It is stopped by its PID in b.Cleanup.
func startContainerd(b *testing.B, reg, sandboxImage string) containerdEndpoint {
	return startContainerdCNI(b, reg, sandboxImage, "")
}

// startContainerdCNI is startContainerd with conflist (if not "") as its
// only CNI config and Debian's plugins in /usr/lib/cni as its bin_dir.
func startContainerdCNI(b *testing.B, reg, sandboxImage, conflist string) containerdEndpoint {
	return startContainerdWith(b, containerdBin, containerdConfig, reg, sandboxImage, conflist)
}

// startContainerdWith is startContainerdCNI for the containerd binary bin
// with the config template tmpl (containerd.toml.tmpl for 1.x,
// containerd2.toml.tmpl for 2.x). The directory of bin leads the daemon's
// PATH, so that it runs the shim built with it.
func startContainerdWith(b *testing.B, bin, tmpl, reg, sandboxImage, conflist string) containerdEndpoint {
	if _, err := os.Stat(bin); err != nil && bin == "/usr/bin/containerd" {
		if out, err := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "containerd").CombinedOutput(); err != nil {
			b.Skipf("containerd not installed and apt-get failed: %v\n%s", err, out)
		}
	}
	dir, err := os.MkdirTemp("", "containerd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	cniBin := filepath.Join(dir, "cni", "bin")
	if conflist != "" {
		cniBin = "/usr/lib/cni"
	}
	render := func(tmpl string) []byte {
		return []byte(strings.NewReplacer("@DIR@", dir, "@SOCK@", sock, "@REGISTRY@", reg, "@SANDBOX_IMAGE@", sandboxImage,
			"@CNI_BIN@", cniBin).Replace(tmpl))
	}
	hostsDir := filepath.Join(dir, "hosts.d", reg)
	for _, d := range []string{hostsDir, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "net.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(hostsDir, "hosts.toml"), render(hostsConfig), 0o644); err != nil {
		b.Fatal(err)
	}
	if conflist != "" {
		if err := os.WriteFile(filepath.Join(dir, "cni", "net.d", "10-bench.conflist"), []byte(conflist), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	confPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(confPath, render(tmpl), 0o644); err != nil {
		b.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", confPath)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	exited := startDaemon(b, cmd, logf)
	b.Cleanup(func() {
		stopByPID(cmd, exited, 10*time.Second)
		killLeftovers(dir, sock)
		unmountUnder(dir)
		os.RemoveAll(dir)
	})
	conn := dial(b, sock)
	client := runtimeapi.NewImageServiceClient(conn)
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	// Registered after the connection's close, so it runs before it:
	// pods a failed bench left are removed while the daemon still runs.
	b.Cleanup(func() { removeAllPods(rt) })
	deadline := time.Now().Add(scaled(20 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return containerdEndpoint{img: client, rt: rt, sock: sock, dir: dir, pid: cmd.Process.Pid}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			b.Fatalf("containerd exited:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("containerd did not answer in %v: %v", scaled(20*time.Second), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountUnder detaches whatever containerd left mounted under dir.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// runtimeBenchRegistry starts a registry holding the runtime benches'
// busybox image and the pause image the anchors run (benchPause), and
// returns the registry and both references.
func runtimeBenchRegistry(b *testing.B) (reg, image, pause string) {
	reg = testenv.StartRegistry(b)
	rootfs := testenv.BusyboxRootfs(b)
	testenv.PushImage(b, reg, "bench/busybox:1", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}})
	pauseDir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(pauseDir, "rootfs"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pauseDir, "pause.c"), []byte(benchPause), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", filepath.Join(pauseDir, "rootfs", "pause"), filepath.Join(pauseDir, "pause.c")).CombinedOutput(); err != nil {
		b.Fatalf("build the pause: %v\n%s", err, out)
	}
	testenv.PushImage(b, reg, "bench/pause:1", filepath.Join(pauseDir, "rootfs"), testenv.ImageConfig{Entrypoint: []string{"/pause"}})
	return reg, reg + "/bench/busybox:1", reg + "/bench/pause:1"
}

// benchPause is the anchors' pause, as upstream's: it sleeps, reaps, and
// exits on SIGTERM or SIGINT. A pause that ignores SIGTERM (PID 1 of its
// namespace with no handler, as a plain `sleep`) makes CRI-O wait out its
// stop timeout in StopPodSandbox, where containerd sends SIGKILL.
const benchPause = `#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void term(int s) { (void)s; _exit(0); }
static void chld(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
	struct sigaction t = {.sa_handler = term}, c = {.sa_handler = chld, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
	sigaction(SIGTERM, &t, 0);
	sigaction(SIGINT, &t, 0);
	sigaction(SIGCHLD, &c, 0);
	for (;;)
		pause();
}
`

// startDaemon starts cmd in its own process group with its output in
// logf; the channel closes when it has exited and been reaped.
func startDaemon(b *testing.B, cmd *exec.Cmd, logf *os.File) <-chan struct{} {
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	return exited
}

// stopByPID ends a daemon the bench started: SIGTERM, then SIGKILL after
// grace.
func stopByPID(cmd *exec.Cmd, exited <-chan struct{}, grace time.Duration) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-exited
	}
}
