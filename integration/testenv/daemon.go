package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The one launcher of a peapod daemon under test: the integration tests,
// the critest run and the benches each start theirs with NewDaemon and
// differ only in DaemonOptions. Each daemon has its own directory (socket,
// root, state, registries.conf, CNI config dir, log), cgroup parent,
// bridge and pod range, and its cleanup removes every one of them, even
// after a failure.

// DaemonOptions are what differs between the daemons the tests start.
type DaemonOptions struct {
	Binary string // the peapod binary (BuildPeapod: with its helpers embedded)
	// Name prefixes the temp directory and, unless CgroupParent is set, the
	// relative cgroup parent (nested below the test's own cgroup).
	Name         string
	CgroupParent string // e.g. an absolute "/peapod-bench-N", as the kubelet gives
	// BridgePrefix names the built-in network's bridge (prefix + random
	// suffix) unless Bridge is set; a guard table keeps its traffic on the
	// machine.
	BridgePrefix string
	Bridge       string
	PodCIDR      string // the built-in network's range (FreePodCIDR); required
	Network      string // the --network flag; "" leaves the daemon's default
	Registries   string // registries.conf (MirrorRegistries)
	CNIConflist  string // written into the daemon's CNI config dir; "" leaves it empty
	LogPath      string // the daemon's output; "" is <dir>/daemon.log
	LogLevel     string // the --log-level flag; "" leaves the default
	DirMode      os.FileMode
	Args         []string // added to the daemon's flags
	// Config is peapod.toml's text, written into the daemon's directory
	// and passed with --config before the flags; "" passes none.
	Config       string
	Env          []string // added to the test's environment for the daemon
	ReadyTimeout time.Duration
	// KillWithTest has the kernel kill the daemon if the test process dies
	// (the benches' daemons); the others are stopped by their cleanup.
	KillWithTest bool
	// QuietCleanup removes what is left without reporting it (the benches);
	// otherwise left pods' keepers, mounts, cgroups and veths fail the test.
	QuietCleanup bool

	cni bool // WithNodeEnv chose the CNI network: the conflist is written
}

// Daemon is one peapod under test. Tests may change Args, Env, PodCIDR and
// the paths before Start; Cmd, Conn, RT and Img are set while it runs.
type Daemon struct {
	T              testing.TB
	Opts           DaemonOptions
	Dir            string
	Socket         string
	Root, State    string
	CgroupParent   string
	RegistriesConf string
	Bridge         string
	PodCIDR        string
	CNIConfDir     string
	NRISocket      string // its own: the node's /var/run/nri/nri.sock is never touched
	LogPath        string
	Args, Env      []string
	Cmd            *exec.Cmd
	Conn           *grpc.ClientConn
	RT             runtimeapi.RuntimeServiceClient
	Img            runtimeapi.ImageServiceClient
	// Helpers are the memfds of the helpers the daemon embeds, of every
	// start (a restarted daemon makes new ones; keepers of the old ones
	// live on): what RunsHelper matches.
	Helpers []HelperFile
}

// HelperFile names an embedded helper's memfd (sandbox/helperbin) of one
// daemon start: its name ("peapod-pause") and inode.
type HelperFile struct {
	Name     string
	Dev, Ino uint64
}

// RandomSuffix is 8 hex digits that set one test's names apart.
func RandomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// MirrorRegistries is a registries.conf that reaches reg over plain HTTP
// and mirrors each upstream registry to it; with docker.io among them,
// short names resolve there, as on a node.
func MirrorRegistries(reg string, upstreams ...string) string {
	conf := fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg)
	for _, u := range upstreams {
		if u == "docker.io" {
			conf = "unqualified-search-registries = [\"docker.io\"]\n" + conf
		}
		conf += fmt.Sprintf("[[registry]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", u, reg)
	}
	return conf
}

// BuildPeapod builds peapod into dir from the repository at repo, as make
// build does: the runner and the static keeper built first and embedded
// (tag peapod_embed), nothing beside it. The helpers are built into a
// temporary directory and handed to go:embed through go build -overlay, so
// that the source tree is not written. With PEAPOD_BINARY (built on the
// host for the emulated guest) it copies that binary instead, with the
// helpers beside it that the guest scripts build.
func BuildPeapod(repo, dir string) error {
	if prebuilt := os.Getenv("PEAPOD_BINARY"); prebuilt != "" {
		return copyPrebuilt(prebuilt, dir)
	}
	tags, err := readTags(repo)
	if err != nil {
		return err
	}
	helpers, err := os.MkdirTemp("", "peapod-helpers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(helpers)
	if err := BuildRunner(repo, filepath.Join(helpers, "peapod-runner")); err != nil {
		return err
	}
	if err := BuildKeeper(repo, filepath.Join(helpers, "peapod-pause")); err != nil {
		return err
	}
	absRepo, err := filepath.Abs(repo)
	if err != nil {
		return err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(absRepo, "cmd/peapod/helpers/peapod-runner"): filepath.Join(helpers, "peapod-runner"),
		filepath.Join(absRepo, "cmd/peapod/helpers/peapod-pause"):  filepath.Join(helpers, "peapod-pause"),
	}})
	if err != nil {
		return err
	}
	overlayPath := filepath.Join(helpers, "overlay.json")
	if err := os.WriteFile(overlayPath, overlay, 0o644); err != nil {
		return err
	}
	return goBuild(repo, tags+" peapod_embed", []string{"-overlay", overlayPath}, filepath.Join(dir, "peapod"), "./cmd/peapod")
}

// BuildPeapodSeparate builds the three binaries as make build shipped them
// before peapod embedded its helpers: peapod without them, and
// peapod-runner and peapod-pause beside it, where the daemon finds them
// (the A/B comparisons of TestEmbeddedHelpers and TestKeeperBinary).
func BuildPeapodSeparate(repo, dir string) error {
	if prebuilt := os.Getenv("PEAPOD_BINARY"); prebuilt != "" {
		return copyPrebuilt(prebuilt, dir)
	}
	tags, err := readTags(repo)
	if err != nil {
		return err
	}
	for _, cmd := range []string{"peapod", "peapod-runner"} {
		if err := goBuild(repo, tags, nil, filepath.Join(dir, cmd), "./cmd/"+cmd); err != nil {
			return err
		}
	}
	return BuildKeeper(repo, filepath.Join(dir, "peapod-pause"))
}

// BuildRunner builds the container runner, peapod-runner, into out as make
// build does: cmd/peapod-runner/build.sh (static).
func BuildRunner(repo, out string) error {
	return runBuildScript(repo, "cmd/peapod-runner/build.sh", out)
}

// BuildKeeper builds the pod's keeper, peapod-pause, into out as make build
// does: cmd/peapod-pause/build.sh (static, musl; glibc with
// PEAPOD_KEEPER_LIBC=glibc, or without musl-gcc, with a warning).
func BuildKeeper(repo, out string) error {
	return runBuildScript(repo, "cmd/peapod-pause/build.sh", out)
}

// runBuildScript runs a helper's build script of repo (script, relative to
// it) with the absolute output path out.
func runBuildScript(repo, script, out string) error {
	absRepo, err := filepath.Abs(repo)
	if err != nil {
		return err
	}
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	build := exec.Command(filepath.Join(absRepo, script), out)
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build with %s: %v\n%s", script, err, msg)
	}
	return nil
}

// copyPrebuilt copies prebuilt and the helpers beside it (when built) into
// dir.
func copyPrebuilt(prebuilt, dir string) error {
	for _, cmd := range []string{"peapod", "peapod-runner", "peapod-pause"} {
		src := filepath.Join(filepath.Dir(prebuilt), cmd)
		if _, err := os.Stat(src); err != nil && cmd != "peapod" {
			continue
		}
		if out, err := exec.Command("cp", src, filepath.Join(dir, cmd)).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %v\n%s", cmd, err, out)
		}
	}
	return nil
}

func readTags(repo string) (string, error) {
	tags, err := os.ReadFile(filepath.Join(repo, "build-tags.txt"))
	return strings.TrimSpace(string(tags)), err
}

// goBuild runs go build of pkg in repo with tags and flags into out.
func goBuild(repo, tags string, flags []string, out, pkg string) error {
	args := append([]string{"build", "-tags", tags}, flags...)
	build := exec.Command("go", append(args, "-o", out, pkg)...)
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", pkg, err, out)
	}
	return nil
}

// NewDaemon prepares (but does not start) a daemon; its cleanup is
// registered with t.
func NewDaemon(t testing.TB, o DaemonOptions) *Daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", o.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	suffix := RandomSuffix()
	d := &Daemon{
		T: t, Opts: o, Dir: dir,
		Socket:         filepath.Join(dir, "peapod.sock"),
		Root:           filepath.Join(dir, "root"),
		State:          filepath.Join(dir, "state"),
		CgroupParent:   o.CgroupParent,
		RegistriesConf: filepath.Join(dir, "registries.conf"),
		Bridge:         o.Bridge,
		PodCIDR:        o.PodCIDR,
		CNIConfDir:     filepath.Join(dir, "cni"),
		NRISocket:      filepath.Join(dir, "nri.sock"),
		LogPath:        o.LogPath,
		Args:           o.Args,
		Env:            o.Env,
	}
	if d.CgroupParent == "" {
		d.CgroupParent = o.Name + "-" + suffix
	}
	if d.Bridge == "" {
		d.Bridge = o.BridgePrefix + suffix
	}
	if d.LogPath == "" {
		d.LogPath = filepath.Join(dir, "daemon.log")
	}
	t.Cleanup(d.Destroy)
	if o.DirMode != 0 {
		if err := os.Chmod(dir, o.DirMode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(d.CNIConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.CNIConflist == "" && o.cni {
		o.CNIConflist = d.cniConflist()
	}
	if o.Config != "" {
		if err := os.WriteFile(filepath.Join(dir, "peapod.toml"), []byte(o.Config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if o.CNIConflist != "" {
		if err := os.WriteFile(filepath.Join(d.CNIConfDir, "10-test.conflist"), []byte(o.CNIConflist), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(d.RegistriesConf, []byte(o.Registries), 0o644); err != nil {
		t.Fatal(err)
	}
	GuardBridge(t, d.Bridge)
	return d
}

// Flags are the daemon's command line: its own paths and network, then
// Args.
func (d *Daemon) Flags() []string {
	var f []string
	if d.Opts.Config != "" {
		f = append(f, "--config", filepath.Join(d.Dir, "peapod.toml"))
	}
	f = append(f, "--socket", d.Socket, "--root", d.Root, "--state", d.State,
		"--cgroup-parent", d.CgroupParent, "--registries-conf", d.RegistriesConf,
		"--bridge", d.Bridge, "--pod-cidr", d.PodCIDR, "--cni-conf-dir", d.CNIConfDir, "--nri-socket", d.NRISocket)
	if d.Opts.LogLevel != "" {
		f = append(f, "--log-level", d.Opts.LogLevel)
	}
	if d.Opts.Network != "" {
		f = append(f, "--network", d.Opts.Network)
	}
	return append(f, d.Args...)
}

// Start runs the daemon with Flags and waits until it answers Version.
func (d *Daemon) Start() {
	d.T.Helper()
	d.StartArgs(d.Flags()...)
}

// StartArgs runs the daemon with exactly args (e.g. only --config) and
// waits until it answers Version on Socket.
func (d *Daemon) StartArgs(args ...string) {
	d.T.Helper()
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.T.Fatal(err)
	}
	defer logf.Close()
	d.Cmd = exec.Command(d.Opts.Binary, args...)
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	d.Cmd.Env = append(os.Environ(), d.Env...)
	// Its own process group: a Ctrl-C reaches it only through the test.
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if d.Opts.KillWithTest {
		d.Cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := d.Cmd.Start(); err != nil {
		d.T.Fatalf("start %s: %v", d.Opts.Binary, err)
	}
	// Reconnect backoff capped at 1 s: with gRPC's default (up to 120 s,
	// growing 1.6x) a daemon that takes 30 s to listen, as in the emulated
	// guest, was only dialled again after waitReady's deadline.
	d.Conn, err = grpc.NewClient("unix://"+d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
	if err != nil {
		d.T.Fatal(err)
	}
	d.RT = runtimeapi.NewRuntimeServiceClient(d.Conn)
	d.Img = runtimeapi.NewImageServiceClient(d.Conn)
	d.waitReady()
	d.Helpers = append(d.Helpers, HelperFiles(d.Cmd.Process.Pid)...)
}

// HelperFiles lists the memfds of embedded helpers that process pid holds
// open (a daemon, once it answers).
func HelperFiles(pid int) []HelperFile {
	dir := fmt.Sprintf("/proc/%d/fd/", pid)
	entries, _ := os.ReadDir(dir)
	var out []HelperFile
	for _, e := range entries {
		link, err := os.Readlink(dir + e.Name())
		name, ok := strings.CutPrefix(link, "/memfd:")
		if err != nil || !ok || !strings.HasPrefix(name, "peapod-") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(dir+e.Name(), &st) == nil {
			out = append(out, HelperFile{Name: strings.TrimSuffix(name, " (deleted)"), Dev: st.Dev, Ino: st.Ino})
		}
	}
	return out
}

// RunsHelper reports whether process pid runs from one of the daemon's
// embedded helpers (any of its starts), and which.
func (d *Daemon) RunsHelper(pid int) (string, bool) {
	var st syscall.Stat_t
	if syscall.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st) != nil {
		return "", false
	}
	for _, h := range d.Helpers {
		if h.Dev == st.Dev && h.Ino == st.Ino {
			return h.Name, true
		}
	}
	return "", false
}

// TimeoutScale is PEAPOD_TEST_TIMEOUT_SCALE (1 unless set): the emulated
// cgroup v2 guest of make test-cgroupv2(-full) stretches waits with it.
func TimeoutScale() time.Duration {
	n, err := strconv.Atoi(os.Getenv("PEAPOD_TEST_TIMEOUT_SCALE"))
	if err != nil || n < 1 {
		return 1
	}
	return time.Duration(n)
}

// waitReady polls Version until it answers, the daemon exits or
// ReadyTimeout (20 s unless set) passes.
func (d *Daemon) waitReady() {
	d.T.Helper()
	timeout := d.Opts.ReadyTimeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := d.RT.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		switch {
		case err == nil:
			return
		case d.exited():
			d.T.Fatalf("peapod exited before it answered:\n%s", d.LogTail(60))
		case time.Now().After(deadline):
			d.T.Fatalf("peapod did not answer Version in %s: %v\n%s", timeout, err, d.LogTail(60))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exited reports whether the daemon's process has ended, without reaping
// it (the tests that wait for a crash reap it themselves with Cmd.Wait):
// its /proc entry is gone, or a zombie.
func (d *Daemon) exited() bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.Cmd.Process.Pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}

// LogTail is the last n lines of the daemon's output.
func (d *Daemon) LogTail(n int) string {
	data, _ := os.ReadFile(d.LogPath)
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (d *Daemon) closeConn() {
	if d.Conn != nil {
		d.Conn.Close()
		d.Conn = nil
	}
}

// Stop ends the daemon with SIGTERM, as an operator would; one still
// there 15 s later is killed, and reported.
func (d *Daemon) Stop() {
	if d.Cmd == nil {
		return
	}
	d.closeConn()
	d.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		d.T.Errorf("peapod did not exit 15s after SIGTERM: killed")
		d.Cmd.Process.Kill()
		<-done
	}
	d.Cmd = nil
}

// Kill ends the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill() {
	d.closeConn()
	d.Cmd.Process.Kill()
	d.Cmd.Wait()
	d.Cmd = nil
}

// Destroy removes every pod, stops the daemon and removes everything it
// made (bridge, nftables tables, cgroups, mounts, directory), even after a
// failure; unless QuietCleanup, what was left fails the test.
func (d *Daemon) Destroy() {
	keepers := d.removePods()
	d.Stop()
	report := func(format string, args ...any) {
		if !d.Opts.QuietCleanup {
			d.T.Errorf(format, args...)
		}
	}
	if d.T.Failed() {
		d.T.Logf("peapod log:\n%s", d.LogTail(60))
	}
	for _, pid := range keepers {
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); pid > 0 && strings.Contains(string(cmdline), "pod-pause") {
			report("pause process %d left running: killed", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if m := MountsUnder(d.Dir); len(m) > 0 {
		report("mounts left under %s: %v", d.Dir, m)
		for i := len(m) - 1; i >= 0; i-- {
			syscall.Unmount(m[i], syscall.MNT_DETACH)
		}
	}
	cg := sliceCgroup(d.CgroupParent)
	if left := CgroupChildren(cg); len(left) > 0 {
		report("cgroups left under %s: %v", cg, left)
	}
	stopSlice(d.CgroupParent)
	RemoveCgroup(cg)
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", d.Bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		report("veths left on %s: %s", d.Bridge, out)
	}
	exec.Command("ip", "link", "del", d.Bridge).Run()
	for _, family := range []string{"ip", "ip6", "inet", "bridge"} {
		exec.Command("nft", "delete", "table", family, "peapod-"+d.Bridge).Run()
	}
	os.RemoveAll(d.Dir)
}

// removePods removes the pods the test left, if the daemon runs, and
// returns their keepers' PIDs for the leftover check.
func (d *Daemon) removePods() (keepers []int) {
	if d.Cmd == nil || d.RT == nil || d.exited() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := d.RT.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil
	}
	for _, p := range resp.Items {
		keepers = append(keepers, d.KeeperPID(ctx, p.Id))
		if _, err := d.RT.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			d.T.Errorf("cleanup: remove pod %s: %v", p.Id, err)
		}
	}
	if len(resp.Items) > 0 {
		d.T.Logf("cleanup: removed %d pods the test left", len(resp.Items))
	}
	return keepers
}

// KeeperPID reads the pod's keeper (pause) PID from the verbose status; 0
// when it cannot.
func (d *Daemon) KeeperPID(ctx context.Context, pod string) int {
	resp, err := d.RT.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		return 0
	}
	var info struct{ Pid int }
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	return info.Pid
}

// CgroupChildren lists the cgroups left below parent in any hierarchy.
func CgroupChildren(parent string) []string {
	var out []string
	for _, dir := range CgroupDirs(parent) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	return out
}
