package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCrashKeepsContainers: kill -9 of the daemon under 20 pods whose
// containers write a numbered line every 10 ms. After 5 s down and a
// restart all 20 run, every number is in every log exactly once, exec and
// attach work, and a container that exits with 7 and one the OOM killer
// ends while the daemon is down are reported exactly.
func TestCrashKeepsContainers(t *testing.T) {
	d, image := readyDaemon(t)
	// One context for the whole test, which makes 22 pods: ctx's 60 s was
	// not enough on a machine loaded by other work (seen at load 20+).
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute*timeoutScale)
	defer cancel()
	const pods = 20
	var writers []string
	var logs []string
	for i := range pods {
		podCfg := podConfig(fmt.Sprintf("crash-%d", i), t.TempDir())
		run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		cfg := containerConfig("count", image, "sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.01; done")
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		writers = append(writers, cr.ContainerId)
		logs = append(logs, filepath.Join(podCfg.LogDirectory, "count.log"))
	}

	// Two containers that end while the daemon is down, when the test
	// creates /trigger/go (a host directory).
	trigger := t.TempDir()
	podCfg := podConfig("crash-exits", t.TempDir())
	run := runPod(t, d, podCfg)
	wait := "while [ ! -e /trigger/go ]; do sleep 0.05; done; "
	exits := map[string]string{}
	for name, script := range map[string]string{
		"seven": wait + "exit 7",
		"hog":   wait + "exec dd if=/dev/zero of=/dev/null bs=64M",
	} {
		cfg := containerConfig(name, image, "sh", "-c", script)
		cfg.Mounts = []*runtimeapi.Mount{{HostPath: trigger, ContainerPath: "/trigger"}}
		if name == "hog" {
			cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}}
		}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		exits[name] = cr.ContainerId
	}

	time.Sleep(300 * time.Millisecond) // some lines before the crash
	down := time.Now()
	d.Kill()
	if err := os.WriteFile(filepath.Join(trigger, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	up := time.Now()
	d.Start()
	c = ctx(t)

	for i, id := range writers {
		if s := containerStatus(t, d, id); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("writer %d after the crash: %v %s", i, s.State, s.Message)
		}
	}
	want := map[string]struct {
		code   int32
		reason string
	}{"seven": {7, "Error"}, "hog": {137, "OOMKilled"}}
	for name, id := range exits {
		var s *runtimeapi.ContainerStatus
		waitFor(t, 10*time.Second, name+" to be reported exited", func() bool {
			s = containerStatus(t, d, id)
			return s.State == runtimeapi.ContainerState_CONTAINER_EXITED
		})
		finished := time.Unix(0, s.FinishedAt)
		if s.ExitCode != want[name].code || s.Reason != want[name].reason || finished.Before(down) || finished.After(up) {
			t.Errorf("%s: exit %d reason %q finished %s; want %d %s, finished between %s and %s",
				name, s.ExitCode, s.Reason, finished.Format(time.StampMilli), want[name].code, want[name].reason,
				down.Format(time.StampMilli), up.Format(time.StampMilli))
		}
	}

	for i, id := range writers {
		ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"echo", "exec-" + strconv.Itoa(i)}, Timeout: 10})
		if err != nil || string(ex.Stdout) != fmt.Sprintf("exec-%d\n", i) {
			t.Errorf("exec in writer %d after the crash: %v %q", i, err, ex.GetStdout())
		}
	}
	attachSeesOutput(t, d, writers[0])

	// Each log has every number once, in order, and lines stamped while
	// the daemon was down, up to its end: the keeper kept writing them.
	// Counted by their timestamps, not by the last number, and with a low
	// bar (one line a second, the last in the downtime's final 2 s): a
	// writer forks `sleep` per line, and at load 25-40 twenty of them made
	// only 9-15 lines in 5 s, with either keeper libc (a rate bar of one
	// per 250 ms failed there while the keeper wrote every line it got).
	fewest := -1
	for i, path := range logs {
		last, during, latest := checkNumberedLog(t, path, down, up)
		if fewest < 0 || during < fewest {
			fewest = during
		}
		if min := int(up.Sub(down) / time.Second); during < min || latest.Before(up.Add(-2*time.Second)) {
			t.Errorf("log %d (last %d): %d lines stamped while the daemon was down (want at least %d), the last at %s (want after %s)",
				i, last, during, min, latest.Format(time.StampMilli), up.Add(-2*time.Second).Format(time.StampMilli))
		}
	}
	t.Logf("fewest lines a writer logged while the daemon was down for %s: %d", up.Sub(down).Round(time.Millisecond), fewest)
}

// attachSeesOutput attaches to a running container over SPDY and waits
// for a line of its output.
func attachSeesOutput(t *testing.T, d *daemon, id string) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := d.RT.Attach(c, &runtimeapi.AttachRequest{ContainerId: id, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatalf("attach after the crash: %v", err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- executor(t, resp.Url).StreamWithContext(c, remotecommand.StreamOptions{Stdout: pw, Stderr: io.Discard})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if _, perr := strconv.Atoi(strings.TrimSpace(line)); err != nil || perr != nil {
		t.Errorf("attach after the crash: read %q: %v", line, err)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	<-done
}

// checkNumberedLog checks that the CRI log at path holds 0, 1, 2, ...
// each exactly once and in order, and returns the last number, how many
// lines are stamped between from and to, and the latest such stamp.
func checkNumberedLog(t *testing.T, path string, from, to time.Time) (last, between int, latest time.Time) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	text = text[:strings.LastIndexByte(text, '\n')+1] // the writer may be mid-line
	next := 0
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			t.Fatalf("%s: malformed CRI log line %q", path, line)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil || n != next {
			t.Fatalf("%s: line %q where %d was expected", path, line, next)
		}
		stamp, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			t.Fatalf("%s: line %q: timestamp: %v", path, line, err)
		}
		if stamp.After(from) && stamp.Before(to) {
			between++
			latest = stamp
		}
		next++
	}
	return next - 1, between, latest
}

// waitCrash waits for the daemon to exit at a failpoint (status 70).
func (d *daemon) waitCrash() {
	d.T.Helper()
	if d.Conn != nil {
		d.Conn.Close()
		d.Conn = nil
	}
	done := make(chan error, 1)
	go func() { done <- d.Cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 70 {
			d.T.Errorf("daemon ended with %v, want exit status 70 from a failpoint", err)
		}
	case <-time.After(20 * time.Second):
		d.Cmd.Process.Kill()
		<-done
		d.T.Errorf("daemon did not crash at the failpoint")
	}
	d.Cmd = nil
}

// kubeletPod is what the kubelet does to get a pod's sandbox: use the
// ready one if there is one, else run one with the next attempt number.
func kubeletPod(c context.Context, d *daemon, cfg *runtimeapi.PodSandboxConfig) (string, error) {
	list, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return "", err
	}
	attempt := uint32(0)
	for _, p := range list.Items {
		if p.Metadata.Uid != cfg.Metadata.Uid {
			continue
		}
		if p.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			return p.Id, nil
		}
		attempt = max(attempt, p.Metadata.Attempt+1)
	}
	cfg.Metadata.Attempt = attempt
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return "", err
	}
	return run.PodSandboxId, nil
}

// kubeletContainer: use the pod's container of that name if there is one,
// else create it.
func kubeletContainer(c context.Context, d *daemon, pod string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (string, error) {
	list, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: pod}})
	if err != nil {
		return "", err
	}
	for _, ctr := range list.Containers {
		if ctr.Metadata.Name == cfg.Metadata.Name {
			return ctr.Id, nil
		}
	}
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		return "", err
	}
	return cr.ContainerId, nil
}

// kubeletStart starts a container unless it already runs.
func kubeletStart(c context.Context, d *daemon, id string) error {
	s, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return err
	}
	if s.Status.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil
	}
	_, err = d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: id})
	return err
}

// TestCrashAtFailpoints crashes the daemon at every failpoint of
// RunPodSandbox, CreateContainer, StartContainer and StopPodSandbox. After
// a restart the kubelet's retries succeed, and once everything is removed
// nothing is left: no process of the peapod binary, mount, cgroup, veth,
// IP allocation or state entry.
func TestCrashAtFailpoints(t *testing.T) {
	d, image := readyDaemon(t)
	d.Stop()
	points := []string{
		"run-pod-after-record", "run-pod-after-files", "run-pod-after-cgroup", "run-pod-after-pause",
		"run-pod-after-network", "run-pod-after-save",
		"create-container-after-bundle", "create-container-after-rootfs", "create-container-after-spec",
		"create-container-after-save",
		"start-container-after-rootfs", "start-container-after-start", "start-container-after-save",
		"stop-pod-after-containers", "stop-pod-after-network", "stop-pod-after-pause", "stop-pod-after-cgroup",
		"stop-pod-after-save",
	}
	for i, fp := range points {
		if t.Failed() {
			break
		}
		podCfg := podConfig(fmt.Sprintf("fp-%d", i), t.TempDir())
		ctrCfg := containerConfig("work", image, "sleep", "3600")
		var pod, ctr string
		steps := []func(c context.Context) error{
			func(c context.Context) (err error) { pod, err = kubeletPod(c, d, podCfg); return err },
			func(c context.Context) (err error) {
				ctr, err = kubeletContainer(c, d, pod, podCfg, ctrCfg)
				return err
			},
			func(c context.Context) error { return kubeletStart(c, d, ctr) },
			func(c context.Context) error {
				_, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
				return err
			},
		}
		d.Env = []string{"PEAPOD_FAILPOINTS=" + fp}
		d.Start()
		c := ctx(t)
		crashed := -1
		for s, step := range steps {
			if err := step(c); err != nil {
				if code := status.Code(err); code != codes.Unavailable && code != codes.Unknown {
					t.Fatalf("%s: step %d: %v", fp, s, err)
				}
				crashed = s
				break
			}
		}
		if crashed < 0 {
			t.Fatalf("%s: the daemon did not crash", fp)
		}
		d.waitCrash()
		d.Env = nil
		d.Start()
		for s := crashed; s < len(steps); s++ {
			if err := steps[s](c); err != nil {
				t.Fatalf("%s: retry of step %d after the restart: %v", fp, s, err)
			}
		}
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatalf("%s: remove pod: %v", fp, err)
		}
		if list, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{}); err != nil || len(list.Items) != 0 {
			t.Errorf("%s: pods left after removing: %v %v", fp, list, err)
		}
		d.Stop()
		checkNothingLeft(t, d, fp)
	}
}

// checkNothingLeft checks, with the daemon stopped, that nothing of its
// pods is left.
func checkNothingLeft(t *testing.T, d *daemon, what string) {
	t.Helper()
	for _, bin := range ourBinaries() {
		if procs := processesOf(bin); len(procs) > 0 {
			t.Errorf("%s: processes of %s left: %v", what, bin, procs)
			for _, pid := range procs {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// Processes of the helpers it embeds (sealed memfds, of any of its
	// starts): keepers, runners, exec helpers.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if name, ok := d.RunsHelper(pid); ok && !keeperOfAnotherDaemon(pid, d.State) {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				t.Errorf("%s: process %d of the embedded %s left (%q)", what, pid, name, cmdline)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, m := range mountsUnder(d.Dir) {
		if !strings.HasSuffix(m, "/overlay") { // the image store's own mount of its driver dir
			t.Errorf("%s: mount left: %s", what, m)
		}
	}
	if left := cgroupChildren(d.CgroupParent); len(left) > 0 {
		t.Errorf("%s: cgroups left: %v", what, left)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", d.Bridge).CombinedOutput(); strings.Contains(string(out), "veth") {
		t.Errorf("%s: veths left on %s: %s", what, d.Bridge, out)
	}
	if ips, _ := os.ReadDir(filepath.Join(d.Root, "network", "ipam-"+d.Bridge)); len(ips) > 0 {
		var names []string
		for _, e := range ips {
			names = append(names, e.Name())
		}
		t.Errorf("%s: IP allocations left: %v", what, names)
	}
	for _, dir := range []string{"pods", "containers", "k", "runc"} {
		if entries, _ := os.ReadDir(filepath.Join(d.State, dir)); len(entries) > 0 {
			t.Errorf("%s: %d entries left in state/%s, first %s", what, len(entries), dir, entries[0].Name())
		}
	}
}

// keeperOfAnotherDaemon reports whether pid is a keeper, or a process
// beneath one (its PID holder, "/pause"), whose socket (-S) is not under
// state: another daemon's, run from the same sealed memfd when both run
// the same binary (a daemon adopts the memfd of any keeper with the same
// content: helperbin.adopt), as test daemons running side by side do.
func keeperOfAnotherDaemon(pid int, state string) bool {
	for depth := 0; depth < 4 && pid > 1; depth++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return false
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-S" {
				return !strings.HasPrefix(args[i+1], state+"/")
			}
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// The parent is the second field after the command's ")".
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
	}
	return false
}

// processesOf lists the processes running the binary at path.
func processesOf(path string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if runsBinary(e.Name(), path) {
			out = append(out, pid)
		}
	}
	return out
}

// TestReboot simulates a reboot: the daemon stops, the pods' keepers and
// containers die, mounts go and the state dir is emptied; the root dir
// stays. The restarted daemon reports the pods NotReady and the containers
// Exited, has released their cgroups and IPs, and the kubelet can run the
// pods again with the next attempt.
func TestReboot(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	var pods []string
	var cfgs []*runtimeapi.PodSandboxConfig
	var ctrs []string
	for i := range 2 {
		podCfg := podConfig(fmt.Sprintf("reboot-%d", i), t.TempDir())
		run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: containerConfig("work", image, "sleep", "3600"), SandboxConfig: podCfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		pods, cfgs, ctrs = append(pods, run.PodSandboxId), append(cfgs, podCfg), append(ctrs, cr.ContainerId)
	}
	var victims []int
	for i := range pods {
		victims = append(victims, pausePID(c, d, pods[i]), containerPID(t, d, ctrs[i]))
	}

	simulateReboot(t, d, victims)

	d.Start()
	c = ctx(t)
	for i := range pods {
		ps, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pods[i]})
		if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("pod %d after the reboot: %v %v", i, ps.GetStatus().GetState(), err)
		}
		if s := containerStatus(t, d, ctrs[i]); s.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("container %d after the reboot: %v", i, s.State)
		}
	}
	if left := cgroupChildren(d.CgroupParent); len(left) > 0 {
		t.Errorf("cgroups of the pods left after the reboot: %v", left)
	}
	if ips, _ := os.ReadDir(filepath.Join(d.Root, "network", "ipam-"+d.Bridge)); len(ips) > 0 {
		t.Errorf("IP allocations left after the reboot: %d", len(ips))
	}

	// The kubelet runs each pod again with the next attempt.
	for i := range pods {
		newPod, err := kubeletPod(c, d, cfgs[i])
		if err != nil {
			t.Fatalf("run pod %d again: %v", i, err)
		}
		if cfgs[i].Metadata.Attempt != 1 {
			t.Errorf("pod %d ran again with attempt %d, want 1", i, cfgs[i].Metadata.Attempt)
		}
		again := containerConfig("work", image, "sleep", "3600")
		again.Metadata.Attempt = 1 // the kubelet counts the restart
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: newPod, Config: again, SandboxConfig: cfgs[i]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		ex, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: cr.ContainerId, Cmd: []string{"echo", "again"}, Timeout: 10})
		if err != nil || string(ex.Stdout) != "again\n" {
			t.Errorf("exec in pod %d run again: %v %q", i, err, ex.GetStdout())
		}
		// The old sandbox goes, as the kubelet's garbage collector does it.
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pods[i]}); err != nil {
			t.Errorf("remove pod %d from before the reboot: %v", i, err)
		}
	}
}

// simulateReboot does to a stopped daemon's node what a reboot does: the
// pods' processes (victims) die, every mount under the test's directory
// goes, and state (a tmpfs on a node) is emptied. The caller starts the
// daemon again.
func simulateReboot(t *testing.T, d *daemon, victims []int) {
	t.Helper()
	d.Stop()
	for _, pid := range victims {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	waitFor(t, 10*time.Second, "the pods' processes to die", func() bool {
		for _, pid := range victims {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z") {
				return false
			}
		}
		return true
	})
	m := mountsUnder(d.Dir)
	for i := len(m) - 1; i >= 0; i-- {
		if err := syscall.Unmount(m[i], syscall.MNT_DETACH); err != nil {
			t.Fatalf("unmount %s: %v", m[i], err)
		}
	}
	if err := os.RemoveAll(d.State); err != nil {
		t.Fatal(err)
	}
}
