package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// ociRuntimes are the external OCI runtime binaries the handler tests
// run pods on: Debian's runc and crun (contrib/deps.sh installs them).
// PEAPOD_OCI_RUNTIMES (space-separated paths) overrides the list.
func ociRuntimes() []string {
	if v := os.Getenv("PEAPOD_OCI_RUNTIMES"); v != "" {
		return strings.Fields(v)
	}
	return []string{"/usr/bin/runc", "/usr/bin/crun"}
}

// TestOCIRuntimeHandler runs a pod whose handler is an external OCI
// runtime binary: the runtime creates, starts, signals, updates, execs
// into and deletes the containers (its own state records them), while
// the pod's keeper stays the init's parent, writes the log and records
// the exit, so a daemon crash and restart leave the container running.
func TestOCIRuntimeHandler(t *testing.T) {
	for _, bin := range ociRuntimes() {
		t.Run(filepath.Base(bin), func(t *testing.T) {
			if _, err := os.Stat(bin); err != nil {
				t.Fatalf("OCI runtime %s: %v (apt-get install %s)", bin, err, filepath.Base(bin))
			}
			testOCIRuntimeHandler(t, bin)
		})
	}
}

func testOCIRuntimeHandler(t *testing.T, bin string) {
	regAddr, image := testImage(t)
	const handler = "oci-test"
	d := newHandlerDaemon(t, regAddr, handler, bin)
	d.Start()
	c := ctx(t)

	// Status reports the handler with what the binary's `features` lists.
	wantRRO := false
	if out, err := exec.Command(bin, "features").Output(); err == nil {
		var f struct{ MountOptions []string }
		json.Unmarshal(out, &f)
		wantRRO = strings.Contains(" "+strings.Join(f.MountOptions, " ")+" ", " rro ")
	}
	st, err := d.RT.Status(c, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var found *runtimeapi.RuntimeHandler
	for _, h := range st.RuntimeHandlers {
		if h.Name == handler {
			found = h
		}
	}
	if found == nil {
		t.Fatalf("Status does not list handler %q: %v", handler, st.RuntimeHandlers)
	}
	if got := found.GetFeatures().GetRecursiveReadOnlyMounts(); got != wantRRO {
		t.Errorf("handler %q: RecursiveReadOnlyMounts %v, want %v (from `%s features`)", handler, got, wantRRO, bin)
	}
	if found.GetFeatures().GetUserNamespaces() {
		t.Errorf("handler %q claims user namespaces: %s lists no idmapped mounts", handler, bin)
	}

	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("oci", t.TempDir())
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: handler})
	if err != nil {
		t.Fatalf("run pod with handler %s: %v", handler, err)
	}
	pod := run.PodSandboxId
	t.Cleanup(func() {
		d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
		d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
	})
	ps, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || ps.Status.RuntimeHandler != handler {
		t.Fatalf("pod status: %v, %v", ps, err)
	}

	ticks := containerConfig("ticks", image, "sh", "-c", "echo hello-oci; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done")
	// Confined, so that the exec below has something to match.
	ticks.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Seccomp:      &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		NoNewPrivs:   true,
		Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW", "CHOWN"}},
	}}
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: podCfg, Config: ticks})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.ContainerId
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		if strings.Contains(err.Error(), "hybrid") {
			// crun 1.8 refuses cgroup v1 hosts with a cgroup2 mount
			// beside (systemd's hybrid layout); it runs on v2 and pure v1.
			t.Skipf("%s cannot run containers on this host's hybrid cgroups: %v", bin, err)
		}
		t.Fatalf("start container under %s: %v", bin, err)
	}
	ociRoot := filepath.Join(d.State, "oci", handler)
	pid := containerPID(t, d, id)

	// The runtime created it: its state names the same init.
	var rs struct {
		Pid    int
		Status string
	}
	out, err := exec.Command(bin, "--root", ociRoot, "state", id).Output()
	if err != nil || json.Unmarshal(out, &rs) != nil || rs.Pid != pid || rs.Status != "running" {
		t.Fatalf("%s state %s: %s %v; want running with pid %d", bin, id, out, err, pid)
	}
	// The keeper, not the runtime, is the init's parent.
	keeper := pausePID(c, d, pod)
	if pp := parentPID(t, pid); pp != keeper {
		t.Errorf("init %d has parent %d, want the pod's keeper %d", pid, pp, keeper)
	}
	logPath := filepath.Join(podCfg.LogDirectory, "ticks.log")
	waitFor(t, 10*time.Second, "the container's first log line", func() bool {
		data, _ := os.ReadFile(logPath)
		return strings.Contains(string(data), " stdout F hello-oci\n")
	})

	// Stretched in the emulated guest: runc's exec (a Go binary, then its
	// init) takes seconds there where crun's takes a fraction.
	execTimeout := 10 * int64(timeoutScale)
	// Exec goes through the runtime, confined as the container.
	ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, Timeout: execTimeout})
	if err != nil || string(ex.Stdout) != "out\n" || string(ex.Stderr) != "err\n" || ex.ExitCode != 3 {
		t.Errorf("ExecSync: %v stdout %q stderr %q exit %d; want out, err, 3", err, ex.GetStdout(), ex.GetStderr(), ex.GetExitCode())
	}
	ex, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"/no/such/command"}, Timeout: execTimeout})
	if err != nil || ex.ExitCode != 127 {
		t.Errorf("ExecSync of a missing command: %v exit %d, want 127", err, ex.GetExitCode())
	}
	// The init's confinement, then the exec'd shell's: the same.
	confinement := "for f in " + strconv.Itoa(nsPID(t, pid)) + " $$; do grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs|Uid):' /proc/$f/status | tr -s '\t ' ' '; cat /proc/$f/cgroup; echo --; done"
	ex, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", confinement}, Timeout: execTimeout})
	if err != nil || ex.ExitCode != 0 {
		t.Fatalf("read confinement: %v %s", err, ex.GetStderr())
	}
	parts := strings.Split(string(ex.Stdout), "--\n")
	if len(parts) != 3 || parts[0] != parts[1] || !strings.Contains(parts[0], "Seccomp: 2") || !strings.Contains(parts[0], "NoNewPrivs: 1") {
		t.Errorf("exec'd process is not confined as the init (init's, then the exec's):\n%s", ex.Stdout)
	}
	// Stats read the container's cgroup.
	cs, err := d.RT.ContainerStats(c, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil || cs.Stats.GetMemory().GetWorkingSetBytes() == nil || cs.Stats.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		t.Errorf("ContainerStats: %v, %v; want CPU and memory of the init's cgroup (/proc/%d/cgroup: %s)", cs, err, pid, cg)
	}
	// An update goes through the runtime's update into the cgroup.
	if _, err := d.RT.UpdateContainerResources(c, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20}}); err != nil {
		t.Errorf("UpdateContainerResources: %v", err)
	}
	ex, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"}, Timeout: execTimeout})
	if err != nil || strings.TrimSpace(string(ex.Stdout)) != strconv.Itoa(96<<20) {
		t.Errorf("memory limit after update: %v %q, want %d", err, ex.GetStdout(), 96<<20)
	}

	// A crash of the daemon: the keeper keeps logging, the container runs on.
	d.Kill()
	before := countLines(t, logPath)
	time.Sleep(500 * time.Millisecond)
	if after := countLines(t, logPath); after <= before {
		t.Errorf("the log did not grow while the daemon was down (%d then %d lines)", before, after)
	}
	d.Start()
	c = ctx(t)
	if s := containerStatus(t, d, id); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container after the restart: %v", s.State)
	}
	if got := containerPID(t, d, id); got != pid {
		t.Errorf("container PID after the restart %d, want %d", got, pid)
	}
	ex, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"echo", "still-here"}, Timeout: execTimeout})
	if err != nil || string(ex.Stdout) != "still-here\n" {
		t.Errorf("exec after the restart: %v %q", err, ex.GetStdout())
	}

	// A terminal exec with stdin and a resize, through the runtime's own
	// terminal copy: the size reaches the container's terminal.
	resp, err := d.RT.Exec(c, &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sh", "-c", "read line; busybox stty size; echo got:$line term=$TERM"}, Stdin: true, Stdout: true, Tty: true})
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
	time.Sleep(500 * time.Millisecond) // let the resize land before the read returns
	fmt.Fprintln(stdinW, "hello")
	if err := <-done; err != nil {
		t.Errorf("tty exec: %v", err)
	}
	close(sizes.sizes)
	stdinW.Close()
	if got := ttyOut.String(); !strings.Contains(got, "45 123") || !strings.Contains(got, "got:hello term=xterm") {
		t.Errorf("tty exec output %q: want the size 45 123 and got:hello term=xterm", got)
	}

	// An exit code, recorded by the keeper.
	exits := startContainer(t, d, pod, podCfg, containerConfig("exits", image, "sh", "-c", "echo bye; exit 7"))
	waitFor(t, 10*time.Second, "the exiting container to be reported exited", func() bool {
		return containerStatus(t, d, exits).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s := containerStatus(t, d, exits); s.ExitCode != 7 || s.Reason != "Error" {
		t.Errorf("exited container: code %d reason %q, want 7 Error", s.ExitCode, s.Reason)
	}
	// An exited container's runtime state is deleted with its cgroup.
	waitFor(t, 10*time.Second, "the runtime's state of the exited container to go", func() bool {
		return exec.Command(bin, "--root", ociRoot, "state", exits).Run() != nil
	})

	// A terminal: the runtime hands the master to the runner over
	// --console-socket, the runner to the keeper, which logs it.
	termCfg := containerConfig("term", image, "sh", "-c", "test -t 1 && echo is-a-tty")
	termCfg.Tty = true
	term := startContainer(t, d, pod, podCfg, termCfg)
	waitFor(t, 10*time.Second, "the terminal container to exit", func() bool {
		return containerStatus(t, d, term).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s := containerStatus(t, d, term); s.ExitCode != 0 {
		t.Errorf("terminal container: exit %d (no terminal?), want 0", s.ExitCode)
	}
	if data, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "term.log")); !strings.Contains(string(data), "is-a-tty") {
		t.Errorf("terminal container's log: %q, want is-a-tty", data)
	}

	// Stop: the runtime's kill, then the keeper's record of the exit.
	if _, err := d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if s := containerStatus(t, d, id); s.State != runtimeapi.ContainerState_CONTAINER_EXITED || (s.ExitCode != 137 && s.ExitCode != 143) {
		t.Errorf("stopped container: %v exit %d, want exited by SIGTERM or SIGKILL", s.State, s.ExitCode)
	}
	for _, ctr := range []string{id, exits, term} {
		if _, err := d.RT.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: ctr}); err != nil {
			t.Errorf("remove %s: %v", ctr, err)
		}
		if out, err := exec.Command(bin, "--root", ociRoot, "state", ctr).CombinedOutput(); err == nil {
			t.Errorf("%s still knows removed container %s: %s", bin, ctr, out)
		}
	}
	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Errorf("stop pod: %v", err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Errorf("remove pod: %v", err)
	}
	if entries, _ := os.ReadDir(ociRoot); len(entries) != 0 {
		t.Errorf("%s left state behind: %v", ociRoot, entries)
	}
}

// newHandlerDaemon prepares a daemon with handler mapped to the OCI runtime
// binary bin, configured as the node the environment names: in the cgroup
// v2 guest (integration/oci-handlers-v2.sh, where crun runs) the systemd
// driver and, on UML, the CNI network; on the host the daemon's defaults.
func newHandlerDaemon(t *testing.T, regAddr, handler, bin string) *daemon {
	o := daemonOptions(t, regAddr)
	o.Config = fmt.Sprintf("[runtime_handlers.%s]\nruntime = \"oci\"\npath = %q\n", handler, bin)
	return &daemon{testenv.NewDaemon(t, o.WithNodeEnv())}
}

// nsPID is pid as its own PID namespace numbers it (NSpid's last field).
func nsPID(t *testing.T, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" {
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return 0
}

// parentPID is field 4 of /proc/PID/stat.
func parentPID(t *testing.T, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// TestOCIRuntimeHandlerCrashMidStart crashes the daemon right after the
// keeper started a container of an external runtime, before the start was
// recorded: the restarted daemon kills it and deletes it through the
// runtime, the retried start works, and once the pod is removed nothing is
// left, in the runtime's state neither.
func TestOCIRuntimeHandlerCrashMidStart(t *testing.T) {
	const bin, handler = "/usr/bin/runc", "oci-crash"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (apt-get install runc)", bin, err)
	}
	d, image := readyDaemon(t)
	d.Stop()
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "[runtime_handlers.%s]\nruntime = \"oci\"\npath = %q\n", handler, bin), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--config", conf)
	d.Env = []string{"PEAPOD_FAILPOINTS=start-container-after-start"}
	d.Start()
	c := ctx(t)
	podCfg := podConfig("oci-crash", t.TempDir())
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: handler})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: podCfg,
		Config: containerConfig("work", image, "sleep", "3600")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err == nil {
		t.Fatal("the daemon did not crash at start-container-after-start")
	}
	d.waitCrash()
	d.Env = nil
	d.Start()
	c = ctx(t)
	if s := containerStatus(t, d, cr.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Fatalf("half-started container after the restart: %v, want created", s.State)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("retried start: %v", err)
	}
	if s := containerStatus(t, d, cr.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container after the retried start: %v", s.State)
	}
	d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId})
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	checkNothingLeft(t, d, "oci crash mid-start")
	if entries, _ := os.ReadDir(filepath.Join(d.State, "oci", handler)); len(entries) != 0 {
		t.Errorf("runtime state left: %v", entries)
	}
}

// TestOCIRuntimeHandlerFeatureChecks: a runtime whose `features` lists
// no "rro" (crun 1.8 has no features command at all) gets no recursive
// read-only mount; CreateContainer refuses it as InvalidArgument before
// the runtime runs anything.
func TestOCIRuntimeHandlerFeatureChecks(t *testing.T) {
	const bin, handler = "/usr/bin/crun", "crun"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (apt-get install crun)", bin, err)
	}
	if exec.Command(bin, "features").Run() == nil {
		t.Skipf("%s has a features command: its rro support is what it says", bin)
	}
	regAddr, image := testImage(t)
	d := newHandlerDaemon(t, regAddr, handler, bin)
	d.Start()
	c := ctx(t)
	st, err := d.RT.Status(c, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range st.RuntimeHandlers {
		if h.Name == handler && (h.Features.GetRecursiveReadOnlyMounts() || h.Features.GetUserNamespaces()) {
			t.Errorf("handler %s claims %v without a features command", handler, h.Features)
		}
	}
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("rro", t.TempDir())
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: handler})
	if err != nil {
		t.Fatal(err)
	}
	cfg := containerConfig("rro", image, "sleep", "60")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: t.TempDir(), Readonly: true, RecursiveReadOnly: true,
		Propagation: runtimeapi.MountPropagation_PROPAGATION_PRIVATE}}
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "recursive read-only") {
		t.Errorf("recursive read-only mount on %s: %v, want InvalidArgument naming it", handler, err)
	}
	d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId})
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Errorf("remove pod: %v", err)
	}
}
