package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// The isolation of what peapod itself places into a pod: the keeper and
// the namespace holder (sandbox/pause/pause.c) must be no stronger than the
// pod's containers, and a holder that dies must not leave a Ready pod whose
// next container joins whatever process reuses its PID.

// escapeProbeSource is a static helper for the escape image. "sweep CANARY
// TOKEN PLANT" probes every process in the container's /proc that is not in
// its own mount namespace: it reads CANARY through /proc/PID/root and cwd
// and through every /proc/PID/fd/N, creates /tmp/PLANT through root and
// cwd, reads environ, opens mem, attaches with ptrace (and then compares
// the target's capabilities with its own), and sends every signal. Lines
// starting LEAK, PLANT, OPENFD, ENVIRON, EXEWRITE or GAIN are what must not
// happen.
// "ptrace PID" only attaches and detaches.
const escapeProbeSource = `#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(void) { return strerrorname_np(errno); }

static unsigned long long caps(int pid, const char *key) {
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	unsigned long long v = 0;
	if (!f)
		return ~0ULL;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, strlen(key)))
			v = strtoull(line + strlen(key) + 1, NULL, 16);
	fclose(f);
	return v;
}

static int same_mnt(int pid) {
	char path[64], a[128] = "", b[128] = "";
	snprintf(path, sizeof path, "/proc/%d/ns/mnt", pid);
	if (readlink(path, a, sizeof a - 1) < 0 || readlink("/proc/self/ns/mnt", b, sizeof b - 1) < 0)
		return 0;
	return strcmp(a, b) == 0;
}

static int read_has(const char *path, const char *token) {
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return strstr(buf, token) != NULL;
}

static void try_ptrace(int pid, unsigned long long own) {
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0) {
		printf("ptrace %d: %s\n", pid, err());
		return;
	}
	printf("ptrace %d: attached\n", pid);
	unsigned long long eff = caps(pid, "CapEff:"), prm = caps(pid, "CapPrm:");
	if ((eff | prm) & ~own)
		printf("GAIN %d CapEff=%llx CapPrm=%llx own=%llx\n", pid, eff, prm, own);
	if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0) {
		int st;
		alarm(5);
		waitpid(pid, &st, __WALL);
		alarm(0);
	}
	if (ptrace(PTRACE_DETACH, pid, 0, 0) < 0)
		printf("ptrace %d: detach %s\n", pid, err());
}

static void probe(int pid, const char *canary, const char *token, const char *plant, unsigned long long own) {
	char path[512], cmd[256] = "";
	snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, cmd, sizeof cmd - 1);
		for (ssize_t i = 0; i < n; i++)
			if (!cmd[i])
				cmd[i] = ' ';
		close(fd);
	}
	printf("target %d %s\n", pid, cmd);
	const char *bases[] = {"root", "cwd"};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "/proc/%d/%s%s", pid, bases[i], canary);
		int r = read_has(path, token);
		if (r > 0)
			printf("LEAK %s %d\n", bases[i], pid);
		else
			printf("%s-read %d: %s\n", bases[i], pid, r < 0 ? err() : "no token");
		snprintf(path, sizeof path, "/proc/%d/%s/tmp/%s", pid, bases[i], plant);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd >= 0) {
			printf("PLANT %s %d\n", bases[i], pid);
			(void)write(fd, "x\n", 2);
			close(fd);
		} else {
			printf("%s-plant %d: %s\n", bases[i], pid, err());
		}
	}
	snprintf(path, sizeof path, "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	if (!d) {
		printf("fd-list %d: %s\n", pid, err());
	} else {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "/proc/%d/fd/%s", pid, e->d_name);
			fd = open(path, O_RDONLY);
			if (fd < 0) {
				printf("fd %d/%s: %s\n", pid, e->d_name, err());
				continue;
			}
			printf("OPENFD %d/%s\n", pid, e->d_name);
			int f2 = openat(fd, canary + 1, O_RDONLY);
			if (f2 >= 0) {
				printf("LEAK fd %d/%s\n", pid, e->d_name);
				close(f2);
			}
			close(fd);
		}
		closedir(d);
	}
	snprintf(path, sizeof path, "/proc/%d/environ", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		printf("environ %d: %s\n", pid, err());
	} else {
		char buf[4096];
		ssize_t n = read(fd, buf, sizeof buf);
		long text = 0;
		for (ssize_t i = 0; i < n; i++)
			text += buf[i] != 0;
		if (text > 0)
			printf("ENVIRON %d %ld bytes\n", pid, text);
		else
			printf("environ %d: empty\n", pid);
		close(fd);
	}
	// The binary the process runs: reading it is what containerd's pause
	// allows as well; writing must fail (ETXTBSY, or no access).
	snprintf(path, sizeof path, "/proc/%d/exe", pid);
	fd = open(path, O_RDONLY);
	printf("exe-read %d: %s\n", pid, fd < 0 ? err() : "opened");
	if (fd >= 0)
		close(fd);
	fd = open(path, O_WRONLY);
	if (fd >= 0) {
		printf("EXEWRITE %d\n", pid);
		close(fd);
	} else {
		printf("exe-write %d: %s\n", pid, err());
	}
	snprintf(path, sizeof path, "/proc/%d/mem", pid);
	fd = open(path, O_RDWR);
	printf("mem %d: %s\n", pid, fd < 0 ? err() : "opened");
	if (fd >= 0)
		close(fd);
	try_ptrace(pid, own);
	int sent = 0;
	for (int s = 1; s <= 64; s++)
		if (s != SIGKILL && kill(pid, s) == 0)
			sent++;
	kill(pid, SIGCONT);
	if (kill(pid, SIGKILL) == 0)
		sent++;
	printf("signals %d: %d sent\n", pid, sent);
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, SIG_IGN);
	unsigned long long own = caps(getpid(), "CapEff:");
	if (argc == 3 && !strcmp(argv[1], "ptrace")) {
		try_ptrace(atoi(argv[2]), own);
		return 0;
	}
	if (argc != 5 || strcmp(argv[1], "sweep"))
		return 2;
	int targets = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		int pid = atoi(e->d_name);
		if (pid <= 0 || pid == getpid() || same_mnt(pid))
			continue;
		targets++;
		probe(pid, argv[2], argv[3], argv[4], own);
	}
	printf("own CapEff=%llx\ndone targets=%d\n", own, targets);
	return 0;
}
`

// escapeImage is busybox with the probe at /bin/escprobe.
func escapeImage(t *testing.T, regAddr string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	src := filepath.Join(t.TempDir(), "escprobe.c")
	if err := os.WriteFile(src, []byte(escapeProbeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", filepath.Join(root, "bin", "escprobe"), src).CombinedOutput(); err != nil {
		t.Fatalf("build probe (gcc, libc6-dev): %v: %s", err, out)
	}
	testenv.PushImage(t, regAddr, "e2e-test-images/escprobe:it", root, testenv.ImageConfig{Cmd: []string{"sh"}})
	return "registry.k8s.io/e2e-test-images/escprobe:it"
}

// escapeDaemon starts a daemon with the escape image pulled.
func escapeDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	regAddr := testenv.StartRegistry(t)
	image := escapeImage(t, regAddr)
	d := newDaemon(t, regAddr)
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	// Containers in a user namespace pass through the state dir as "other".
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return d, image
}

// hostCanary is a host file with unguessable content, removed at the end.
func hostCanary(t *testing.T) (path, token string) {
	t.Helper()
	// The content is not part of the name, which error messages repeat.
	token = "secret-" + randomSuffix() + randomSuffix()
	path = filepath.Join("/tmp", "peapod-canary-"+randomSuffix())
	if err := os.WriteFile(path, []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return path, token
}

// plantName is a /tmp name the test watches on the host, removed at the end.
func plantName(t *testing.T) string {
	name := "peapod-plant-" + randomSuffix() + randomSuffix()
	t.Cleanup(func() { os.Remove(filepath.Join("/tmp", name)) })
	return name
}

// podShape is one kind of pod the tests run.
type podShape struct {
	name      string
	sharedPID bool
	userns    bool
	hostNet   bool
}

var escapeShapes = []podShape{
	{name: "own-pid"},
	{name: "shared-pid", sharedPID: true},
	{name: "userns", userns: true, sharedPID: true},
	{name: "host-network", hostNet: true, sharedPID: true},
}

func (s podShape) nsOptions(hostID uint32) *runtimeapi.NamespaceOption {
	o := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	if s.sharedPID {
		o.Pid = runtimeapi.NamespaceMode_POD
	}
	if s.hostNet {
		o.Network = runtimeapi.NamespaceMode_NODE
	}
	if s.userns {
		o.UsernsOptions = usernsOptions(hostID)
	}
	return o
}

// usernsOffered skips the test when the daemon offers no user namespaces.
func usernsOffered(t *testing.T, d *daemon) bool {
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return len(st.RuntimeHandlers) > 0 && st.RuntimeHandlers[0].GetFeatures().GetUserNamespaces()
}

// shapePod runs a pod of the shape; hostID is the user namespace's base.
func shapePod(t *testing.T, d *daemon, s podShape, name string, hostID uint32) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := podConfig(name, filepath.Join(d.Dir, "logs-"+name))
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: s.nsOptions(hostID)}
	return runPod(t, d, cfg).PodSandboxId, cfg
}

// capsContainer is a non-privileged container of the pod that adds caps
// (CAP_ names without the prefix) to the default set.
func capsContainer(name, image string, podCfg *runtimeapi.PodSandboxConfig, add ...string) *runtimeapi.ContainerConfig {
	cfg := containerConfig(name, image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Capabilities:     &runtimeapi.Capability{AddCapabilities: add},
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions,
	}}
	return cfg
}

// podProcs is the keeper's and the holder's PID from the verbose status.
func podProcs(t *testing.T, d *daemon, pod string) (keeper, holder int, info map[string]any) {
	t.Helper()
	resp, err := d.RT.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Pid       int
		PidHolder int
	}
	json.Unmarshal([]byte(resp.Info["info"]), &v)
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	return v.Pid, v.PidHolder, info
}

func podReady(t *testing.T, d *daemon, pod string) (bool, string) {
	t.Helper()
	resp, err := d.RT.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ NotReadyReason string }
	json.Unmarshal([]byte(resp.Info["info"]), &v)
	return resp.Status.State == runtimeapi.PodSandboxState_SANDBOX_READY, v.NotReadyReason
}

// execAll runs cmd in the container and returns its output and exit code.
func execAll(t *testing.T, d *daemon, id string, cmd ...string) (string, int32) {
	t.Helper()
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 60})
	if err != nil {
		t.Fatalf("exec %v: %v", cmd, err)
	}
	return string(r.Stdout) + string(r.Stderr), r.ExitCode
}

// checkNoPlant fails when the planted file appeared on the host.
func checkNoPlant(t *testing.T, name string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join("/tmp", name)); err == nil {
		t.Errorf("a container created host file /tmp/%s", name)
	}
}

// TestEscapeHolderHostFS is finding 1: in a shared-PID pod, a
// non-privileged container that adds only SYS_PTRACE must reach no host
// file through PID 1 (the holder), and PID 1 must hold no capability.
func TestEscapeHolderHostFS(t *testing.T) {
	d, image := escapeDaemon(t)
	canary, token := hostCanary(t)
	plant := plantName(t)
	s := podShape{sharedPID: true}
	pod, podCfg := shapePod(t, d, s, "hostfs", 0)
	ctr := startContainer(t, d, pod, podCfg, capsContainer("ptrace", image, podCfg, "SYS_PTRACE"))

	out, _ := execAll(t, d, ctr, "cat", "/proc/1/root"+canary)
	if strings.Contains(out, token) {
		t.Errorf("container read host file %s through /proc/1/root: %q", canary, out)
	}
	out, _ = execAll(t, d, ctr, "sh", "-c", "echo x > /proc/1/root/tmp/"+plant)
	checkNoPlant(t, plant)
	out, _ = execAll(t, d, ctr, "grep", "^CapEff:", "/proc/1/status")
	if f := strings.Fields(out); len(f) != 2 || strings.Trim(f[1], "0") != "" {
		t.Errorf("PID 1 of the pod has capabilities: %q", out)
	}
	out, _ = execAll(t, d, ctr, "escprobe", "ptrace", "1")
	t.Logf("ptrace attach to PID 1: %s", strings.TrimSpace(out))
	if strings.Contains(out, "GAIN") {
		t.Errorf("ptrace of PID 1 gains capabilities: %s", out)
	}
	out, _ = execAll(t, d, ctr, "cat", "/proc/1/cmdline")
	if out != "/pause\x00" {
		t.Errorf("PID 1's cmdline = %q, want /pause", out)
	}
	// The runner's namespace handles stay with the runner: the container's
	// init has only its stdio.
	out, _ = execAll(t, d, ctr, "sh", "-c", `for p in /proc/[0-9]*; do case "$(cat $p/cmdline)" in sleep*) ls $p/fd;; esac; done`)
	if strings.Join(strings.Fields(out), " ") != "0 1 2" {
		t.Errorf("container init holds fds %q, want 0 1 2", out)
	}
}

// TestEscapeHolderDeath is finding 2: kill -TERM 1 from a root container
// leaves the pod working; a holder killed from the host makes the pod
// NotReady (with a reason and an event) and refuses new containers, also
// once a host process has taken the holder's PID; the same for the user
// namespace holder of a hostUsers: false pod.
func TestEscapeHolderDeath(t *testing.T) {
	d, image := escapeDaemon(t)
	evCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := subscribe(evCtx, t, d, false)

	s := podShape{sharedPID: true}
	pod, podCfg := shapePod(t, d, s, "death", 0)
	ctr := startContainer(t, d, pod, podCfg, capsContainer("root", image, podCfg))
	_, holder, _ := podProcs(t, d, pod)
	if holder <= 0 {
		t.Fatalf("shared-PID pod has no holder (%d)", holder)
	}
	if out, code := execAll(t, d, ctr, "kill", "-TERM", "1"); code != 0 {
		t.Logf("kill -TERM 1: exit %d %s", code, out)
	}
	time.Sleep(500 * time.Millisecond)
	if ready, why := podReady(t, d, pod); !ready {
		t.Errorf("pod is not ready after kill -TERM 1 from a container: %s", why)
	}
	c2 := capsContainer("after-term", image, podCfg)
	cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: c2, SandboxConfig: podCfg})
	if err == nil {
		_, err = d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
	}
	if err != nil {
		t.Errorf("a new container after kill -TERM 1: %v", err)
	} else {
		t.Logf("kill -TERM 1 from a container: pod still Ready, a new container started")
	}

	// The holder killed from the host: NotReady, event, refusal.
	holderGone(t, d, events, pod, podCfg, image, holder, "PID namespace holder")

	// User namespace holder.
	if !usernsOffered(t, d) {
		t.Log("no user namespaces here: the hostUsers: false part is skipped")
		return
	}
	us := podShape{userns: true}
	upod, upodCfg := shapePod(t, d, us, "death-userns", 300000)
	startContainer(t, d, upod, upodCfg, capsContainer("root", image, upodCfg))
	_, uholder, _ := podProcs(t, d, upod)
	if uholder <= 0 {
		t.Fatalf("user-namespaced pod has no holder (%d)", uholder)
	}
	holderGone(t, d, events, upod, upodCfg, image, uholder, "user namespace holder")
}

// holderGone kills the pod's holder from the host and checks the pod is
// NotReady with a reason, that a pod event came, and that no container can
// be created, also after a host process took the holder's PID.
func holderGone(t *testing.T, d *daemon, events *eventLog, pod string, podCfg *runtimeapi.PodSandboxConfig, image string, holder int, what string) {
	t.Helper()
	before := len(events.types(pod))
	if err := syscall.Kill(holder, syscall.SIGKILL); err != nil {
		t.Fatalf("kill holder %d: %v", holder, err)
	}
	waitFor(t, 10*time.Second, "pod NotReady after its holder was killed", func() bool {
		ready, _ := podReady(t, d, pod)
		return !ready
	})
	_, why := podReady(t, d, pod)
	t.Logf("holder %d killed: pod NotReady: %s", holder, why)
	if !strings.Contains(why, what) {
		t.Errorf("NotReady reason %q does not name the %s", why, what)
	}
	waitFor(t, 10*time.Second, "a pod event for the holder's exit", func() bool {
		for _, ty := range events.types(pod)[before:] {
			if ty == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
				return true
			}
		}
		return false
	})
	create := func(name string) error {
		cfg := capsContainer(name, image, podCfg)
		cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			return err
		}
		if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			return err
		}
		// It started: it must not be in the host's namespaces.
		out, _ := execAll(t, d, cr.ContainerId, "sh", "-c", "ls /proc | grep -c '^[0-9]'; cat /proc/self/uid_map")
		t.Errorf("container %s started in a pod whose holder is gone; it sees: %s", name, out)
		if n, _ := strconv.Atoi(strings.Fields(out + " 0")[0]); n > 20 {
			t.Errorf("container %s sees %d processes: the host's PID namespace", name, n)
		}
		return nil
	}
	err := create("after-kill")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "must be recreated") {
		t.Errorf("CreateContainer after the holder died: %v, want FailedPrecondition saying the pod must be recreated", err)
	}
	// A host process takes the holder's PID.
	sleeper := takePID(t, holder)
	if sleeper == nil {
		t.Logf("could not give PID %d to a host process; the reuse part is skipped", holder)
		return
	}
	err = create("after-reuse")
	t.Logf("host sleep %d has the holder's PID; CreateContainer: %v", sleeper.Process.Pid, err)
	if err == nil {
		t.Errorf("CreateContainer with the holder's PID reused by a host process succeeded")
	}
}

// takePID starts a host `sleep` with exactly PID pid (through
// ns_last_pid, retried when another fork wins the race) and ends it at
// cleanup; nil if it never got the PID.
func takePID(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	for i := 0; i < 200; i++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0o644); err != nil {
			t.Logf("ns_last_pid: %v", err)
			return nil
		}
		cmd := exec.Command("sleep", "120")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	return nil
}

// statusField is a line's value of /proc/PID/status.
func statusField(t *testing.T, pid int, key string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status of %d: %v", pid, err)
	}
	m := regexp.MustCompile(`(?m)^` + key + `:\s*(.*)$`).FindSubmatch(data)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(string(m[1]))
}

// TestPeapodProcessConfinement checks the confinement table of the
// processes peapod runs for a pod, for each pod shape:
//
//	process  namespaces                          CapEff/CapBnd  NoNewPrivs  Seccomp  root                  cgroup          cmdline
//	keeper   host pid/mnt/user; pod net/ipc/uts  full (host)    0           0        host /                pod pause leaf  peapod pod-pause ...
//	holder   pod pid (+user); own mnt + cgroup   0 / 0          1           2        empty ro tmpfs        pod pause leaf  /pause
func TestPeapodProcessConfinement(t *testing.T) {
	d, _ := escapeDaemon(t)
	shapes := []podShape{
		{name: "own-pid"},
		{name: "shared-pid", sharedPID: true},
		{name: "userns", userns: true},
		{name: "userns-shared-pid", userns: true, sharedPID: true},
		{name: "host-network", hostNet: true},
	}
	uns := usernsOffered(t, d)
	hostID := uint32(300000)
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			if s.userns && !uns {
				t.Skip("no user namespaces here")
			}
			hostID += 65536
			pod, _ := shapePod(t, d, s, "conf-"+s.name, hostID)
			keeper, holder, _ := podProcs(t, d, pod)
			if keeper <= 0 {
				t.Fatalf("no keeper pid")
			}
			wantHolder := s.sharedPID || s.userns
			if (holder > 0) != wantHolder {
				t.Fatalf("holder pid %d, want one: %v", holder, wantHolder)
			}
			// The keeper is host root (it writes logs and forks runners)
			// in no namespace a container can see into.
			for _, key := range []string{"CapEff", "CapBnd", "NoNewPrivs", "Seccomp"} {
				if got, want := statusField(t, keeper, key), statusField(t, os.Getpid(), key); got != want {
					t.Errorf("keeper %s = %q, want the daemon's %q", key, got, want)
				}
			}
			keeperCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", keeper))
			if !strings.Contains(string(keeperCg), "peapod-pod-"+pod) {
				t.Errorf("keeper is not in the pod's cgroup:\n%s", keeperCg)
			}
			for _, ns := range []string{"pid", "mnt", "user"} {
				if nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", keeper, ns)) != nsInode(t, "/proc/self/ns/"+ns) {
					t.Errorf("keeper left the host's %s namespace", ns)
				}
			}
			if !s.hostNet {
				// The keeper exposes nothing in the pod's namespaces: no
				// abstract unix socket in its network namespace, no SysV
				// IPC object in its IPC namespace.
				unixSocks, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", keeper))
				for _, line := range strings.Split(string(unixSocks), "\n") {
					if f := strings.Fields(line); len(f) == 8 && strings.HasPrefix(f[7], "@") {
						t.Errorf("abstract unix socket in the pod's network namespace: %s", line)
					}
				}
				for _, kind := range []string{"shm", "msg", "sem"} {
					out, err := exec.Command("nsenter", fmt.Sprintf("--ipc=/proc/%d/ns/ipc", keeper), "cat", "/proc/sysvipc/"+kind).CombinedOutput()
					if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); err != nil || len(lines) != 1 {
						t.Errorf("SysV %s objects in the pod's IPC namespace (%v):\n%s", kind, err, out)
					}
				}
			}
			if !wantHolder {
				return
			}
			for key, want := range map[string]string{
				"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000",
				"CapInh": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
			} {
				if got := statusField(t, holder, key); got != want {
					t.Errorf("holder %s = %q, want %q", key, got, want)
				}
			}
			wantUID := "65534"
			if s.userns {
				wantUID = strconv.Itoa(int(hostID) + 65534)
			}
			if got := strings.Fields(statusField(t, holder, "Uid")); len(got) != 4 || got[0] != wantUID || got[1] != wantUID || got[2] != wantUID || got[3] != wantUID {
				t.Errorf("holder uids %v, want all %s", got, wantUID)
			}
			mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", holder))
			lines := strings.Split(strings.TrimSpace(string(mi)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], " / / ro,") || !strings.Contains(lines[0], " - tmpfs ") {
				t.Errorf("holder mounts are not one read-only tmpfs root:\n%s", mi)
			}
			holderCg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", holder))
			if string(holderCg) != string(keeperCg) {
				t.Errorf("holder cgroup differs from the keeper's (the pod's):\n%s\nkeeper:\n%s", holderCg, keeperCg)
			}
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", holder)); string(cmd) != "/pause\x00" {
				t.Errorf("holder cmdline %q, want /pause", cmd)
			}
			// Its binary is a sealed, read-only copy that names no host path.
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", holder)); err != nil || exe == peapodBinary || strings.HasPrefix(exe, filepath.Dir(peapodBinary)) {
				t.Errorf("holder exe %q (%v) is the host's binary", exe, err)
			}
			if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", holder)); strings.Trim(string(env), "\x00") != "" {
				t.Errorf("holder environ not empty: %q", env)
			}
			if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", holder)); err != nil || len(fds) != 0 {
				t.Errorf("holder holds fds %v (%v)", fds, err)
			}
			for _, ns := range []string{"mnt", "cgroup"} {
				if nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", holder, ns)) == nsInode(t, "/proc/self/ns/"+ns) {
					t.Errorf("holder is in the host's %s namespace", ns)
				}
			}
			if s.sharedPID && nsInode(t, fmt.Sprintf("/proc/%d/ns/pid", holder)) == nsInode(t, "/proc/self/ns/pid") {
				t.Errorf("holder is in the host's PID namespace")
			}
			if !s.hostNet && nsInode(t, fmt.Sprintf("/proc/%d/ns/net", holder)) != nsInode(t, fmt.Sprintf("/proc/%d/ns/net", keeper)) {
				t.Errorf("holder and keeper are in different network namespaces")
			}
		})
	}
}

// TestEscapeSweep probes, for each pod shape, every process a
// non-privileged container with SYS_PTRACE and SYS_ADMIN can see outside
// its own mount namespace (the peapod processes in its pod): nothing
// reaches a host file, no capability is gained, and the pod then still
// works or is reported NotReady.
func TestEscapeSweep(t *testing.T) {
	d, image := escapeDaemon(t)
	canary, token := hostCanary(t)
	uns := usernsOffered(t, d)
	for i, s := range escapeShapes {
		t.Run(s.name, func(t *testing.T) {
			if s.userns && !uns {
				t.Skip("no user namespaces here")
			}
			plant := plantName(t)
			pod, podCfg := shapePod(t, d, s, "sweep-"+s.name, uint32(400000+65536*i))
			ctr := startContainer(t, d, pod, podCfg, capsContainer("probe", image, podCfg, "SYS_PTRACE", "SYS_ADMIN"))
			out, code := execAll(t, d, ctr, "escprobe", "sweep", canary, token, plant)
			t.Logf("sweep (exit %d):\n%s", code, out)
			if code != 0 || !strings.Contains(out, "done targets=") {
				t.Fatalf("probe did not finish")
			}
			for _, line := range strings.Split(out, "\n") {
				for _, bad := range []string{"LEAK", "PLANT", "GAIN", "OPENFD", "ENVIRON", "EXEWRITE"} {
					if strings.HasPrefix(line, bad) {
						t.Errorf("sweep: %s", line)
					}
				}
			}
			if s.sharedPID && !strings.Contains(out, "target 1 /pause") {
				t.Errorf("the sweep did not see the holder as PID 1 /pause")
			}
			checkNoPlant(t, plant)
			if data, err := os.ReadFile(canary); err != nil || string(data) != token+"\n" {
				t.Errorf("host canary changed: %q %v", data, err)
			}
			// The pod still works, or says it does not.
			if ready, why := podReady(t, d, pod); !ready {
				t.Logf("pod NotReady after the sweep: %s", why)
				return
			}
			c2 := startContainer(t, d, pod, podCfg, capsContainer("after", image, podCfg))
			if out, code := execAll(t, d, c2, "echo", "alive"); code != 0 || strings.TrimSpace(out) != "alive" {
				t.Errorf("a new container after the sweep: %q exit %d", out, code)
			}
		})
	}
}

// TestEscapeHolderDeathAfterRestart: a shared-PID pod started before a
// daemon restart still starts containers through its holder afterwards,
// and its holder's death is still noticed (NotReady, event, refusal).
func TestEscapeHolderDeathAfterRestart(t *testing.T) {
	d, image := escapeDaemon(t)
	pod, podCfg := shapePod(t, d, podShape{sharedPID: true}, "restart-holder", 0)
	startContainer(t, d, pod, podCfg, capsContainer("before", image, podCfg))
	_, holder, _ := podProcs(t, d, pod)
	d.Stop()
	d.Start()
	if ready, why := podReady(t, d, pod); !ready {
		t.Fatalf("pod not ready after the restart: %s", why)
	}
	c := startContainer(t, d, pod, podCfg, capsContainer("after", image, podCfg))
	if out, _ := execAll(t, d, c, "cat", "/proc/1/cmdline"); out != "/pause\x00" {
		t.Errorf("container started after the restart sees PID 1 %q, not the pod's holder", out)
	}
	evCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	holderGone(t, d, subscribe(evCtx, t, d, false), pod, podCfg, image, holder, "PID namespace holder")
}
