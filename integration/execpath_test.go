package integration

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// execProbe prints what an exec'd process is: its credentials,
// capabilities, no_new_privs and seccomp state, whether each namespace and
// the cgroups are the container init's (PID 1 of the container's PID
// namespace), its session, cwd, umask, limits, oom_score_adj, descriptors
// and environment, and what the probe of the security image (keyctl,
// which the default seccomp profile refuses, mount, setuid) gets.
const execProbe = `for f in /proc/$$/fd/*; do echo "fd ${f##*/}: $(readlink $f | sed 's/[0-9]//g')"; done
sleep 0.3
init=$(cat /dev/shm/init.pid)
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters|Speculation_Store_Bypass|Cpus_allowed_list):' /proc/$$/status
echo ---
for n in cgroup ipc mnt net pid pid_for_children time time_for_children user uts; do
	if [ "$(readlink /proc/$$/ns/$n)" = "$(readlink /proc/$init/ns/$n)" ]; then echo "ns $n: init's"; else echo "ns $n: other $(readlink /proc/$$/ns/$n) $(readlink /proc/$init/ns/$n)"; fi
done
if [ "$(cat /proc/$$/cgroup)" = "$(cat /proc/$init/cgroup)" ]; then echo "cgroups: init's"; else echo "cgroups: other"; cat /proc/$$/cgroup /proc/$init/cgroup; fi
set -- $(sed 's/.*) //' /proc/$$/stat)
echo "session leader: $([ "$4" = "$$" ] && echo yes || echo no) ppid-is-0: $([ "$2" = 0 ] && echo yes || echo no)"
echo "cwd: $(pwd)"
echo "umask: $(umask)"
echo "oom_score_adj: $(cat /proc/$$/oom_score_adj)"
echo "apparmor: $(cat /proc/$$/attr/current 2>/dev/null || echo none) init's: $(cat /proc/$init/attr/current 2>/dev/null || echo none)"
for fd in 0 1 2; do echo "fd $fd: $(stat -L -c '%u %F' /proc/$$/fd/$fd)"; done
cat /proc/$$/limits
echo ---
env
echo ---
probe keyctl; probe mount; probe ids
`

// execTimeout is the ExecSync timeout of TestExecPathsAgree's execs, in
// seconds: libcontainer's path takes over 20 s in the emulated v2 guest.
var execTimeout = int64(20 * timeoutScale)

// TestExecPathsAgree runs the same exec through the fast C helper (package
// sandbox/enter) and through libcontainer (PEAPOD_EXEC_PATH=libcontainer)
// in containers of the same configurations, and compares what the
// processes are. It also checks that each daemon took the path it should.
func TestExecPathsAgree(t *testing.T) {
	regAddr, _ := testImage(t)
	image := securityImage(t, regAddr, "/nonexistent", "/nonexistent")
	daemons := map[string]*daemon{}
	for _, path := range []string{"fast", "libcontainer"} {
		d := newDaemon(t, regAddr)
		if path == "libcontainer" {
			d.Env = append(d.Env, "PEAPOD_EXEC_PATH=libcontainer")
		}
		d.Start()
		if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
			t.Fatal(err)
		}
		daemons[path] = d
	}

	cases := []struct {
		name string
		sec  *runtimeapi.LinuxContainerSecurityContext
		env  []*runtimeapi.KeyValue
		wd   string
		fast bool // the fast daemon must not fall back to libcontainer
	}{
		{name: "root", fast: true},
		{name: "user", fast: true, wd: "/tmp", sec: &runtimeapi.LinuxContainerSecurityContext{
			RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 2000},
			SupplementalGroups: []int64{3000, 4000}, NoNewPrivs: true,
			Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN", "SYS_ADMIN"}, DropCapabilities: []string{"CHOWN"},
				AddAmbientCapabilities: []string{"NET_ADMIN"}},
		}, env: []*runtimeapi.KeyValue{{Key: "DUP", Value: []byte("1")}, {Key: "HOME", Value: []byte("")}, {Key: "DUP", Value: []byte("2")}}},
		{name: "daemon-user", fast: true, sec: &runtimeapi.LinuxContainerSecurityContext{
			RunAsUser: &runtimeapi.Int64Value{Value: 1}, ReadonlyRootfs: true,
			Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}},
		}},
		{name: "privileged", fast: true, sec: &runtimeapi.LinuxContainerSecurityContext{Privileged: true}},
		{name: "seccomp", fast: true, sec: &runtimeapi.LinuxContainerSecurityContext{
			Seccomp:      &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}},
		}},
		// Where the kernel has AppArmor (the qemu guest of make
		// test-cgroupv2-full) every unprivileged case runs under
		// peapod-default, this one by name; the exec must run under the
		// init's profile on both paths.
		{name: "apparmor", fast: true, sec: &runtimeapi.LinuxContainerSecurityContext{
			Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		}},
	}
	ids := regexp.MustCompile(`[0-9a-f]{64}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "apparmor" && !appArmorEnabled() {
				t.Skip("no AppArmor in this kernel: the profile is skipped on both paths, as in the cases above")
			}
			out := map[string]string{}
			for path, d := range daemons {
				cfg := containerConfig("xp-"+tc.name, image, "sh", "-c", "echo $$ > /dev/shm/init.pid; exec sleep 1000")
				cfg.Envs = tc.env
				cfg.WorkingDir = tc.wd
				cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: tc.sec}
				podCfg := podConfig("xp-"+tc.name, t.TempDir())
				if tc.sec.GetPrivileged() {
					podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
				}
				run := runPod(t, d, podCfg)
				ctr := startContainer(t, d, run.PodSandboxId, podCfg, cfg)
				resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"sh", "-c", execProbe}, Timeout: execTimeout})
				if err != nil {
					t.Fatalf("%s: exec: %v", path, err)
				}
				out[path] = ids.ReplaceAllString(string(resp.Stdout)+"stderr:\n"+string(resp.Stderr), "ID") + fmt.Sprintf("exit %d\n", resp.ExitCode)
				// Commands that cannot run: the shell's exit codes, the
				// command named on stderr.
				for _, cmd := range [][]string{{"/no/such/tool"}, {"no-such-tool"}, {"/etc/passwd"}, {"/tmp"}} {
					resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: cmd, Timeout: execTimeout})
					if err != nil {
						out[path] += fmt.Sprintf("%s: %s\n", cmd[0], ids.ReplaceAllString(err.Error(), "ID"))
						continue
					}
					out[path] += fmt.Sprintf("%s: exit %d, stderr %q\n", cmd[0], resp.ExitCode, resp.Stderr)
				}
				if path == "fast" && tc.fast {
					checkHelperExecCgroup(t, d, ctr)
				}
				log, _ := os.ReadFile(d.LogPath)
				fellBack := strings.Contains(string(log), ctr) && (strings.Contains(string(log), "execs go through libcontainer") || strings.Contains(string(log), "exec through libcontainer"))
				if path == "fast" && tc.fast && fellBack {
					t.Errorf("the fast daemon's exec went through libcontainer:\n%s", grepLines(string(log), "libcontainer"))
				}
				if path == "libcontainer" && !fellBack {
					t.Errorf("PEAPOD_EXEC_PATH=libcontainer did not take libcontainer's path")
				}
			}
			if out["fast"] != out["libcontainer"] {
				t.Errorf("the exec paths disagree:\n--- fast\n%s\n--- libcontainer\n%s", out["fast"], out["libcontainer"])
			} else {
				t.Logf("both paths:\n%s", out["fast"])
			}
			if appArmorEnabled() && tc.name == "apparmor" && !strings.Contains(out["fast"], "apparmor: peapod-default (enforce) init's: peapod-default (enforce)") {
				t.Errorf("fast path: the exec is not under the init's AppArmor profile peapod-default:\n%s", grepLines(out["fast"], "apparmor"))
			}
			for _, want := range []string{"cgroups: init's", "session leader: yes"} {
				if !strings.Contains(out["fast"], want) {
					t.Errorf("fast path: want %q", want)
				}
			}
			if strings.Contains(out["fast"], "ns ") && strings.Contains(out["fast"], ": other") {
				t.Errorf("fast path: a namespace is not the init's")
			}
		})
	}
}

// checkHelperExecCgroup runs an exec that the C helper must start (its
// daemon logs the host PID of each exec it starts) and checks, from the
// host, that the process is in the container init's cgroups: on cgroup v2
// the one directory it was cloned into (CLONE_INTO_CGROUP).
func checkHelperExecCgroup(t *testing.T, d *daemon, ctr string) {
	t.Helper()
	started := regexp.MustCompile(`msg="exec through the helper" container=` + ctr + ` pid=(\d+)`)
	helperExecs := func() [][]string {
		log, _ := os.ReadFile(d.LogPath)
		return started.FindAllStringSubmatch(string(log), -1)
	}
	before := len(helperExecs())
	done := make(chan error, 1)
	go func() {
		_, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"sleep", "3"}, Timeout: execTimeout})
		done <- err
	}()
	var pid string
	waitFor(t, 20*time.Second, "the helper to start the exec", func() bool {
		if m := helperExecs(); len(m) > before {
			pid = m[before][1]
		}
		return pid != ""
	})
	execCg, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatalf("the exec's cgroups: %v", err)
	}
	initCg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", containerPID(t, d, ctr)))
	if err != nil {
		t.Fatal(err)
	}
	if string(execCg) != string(initCg) {
		t.Errorf("from the host, the exec process is in\n%s\nthe container's init in\n%s", execCg, initCg)
	} else {
		t.Logf("from the host, the exec process and the init are in\n%s", execCg)
	}
	if err := <-done; err != nil {
		t.Errorf("exec sleep: %v", err)
	}
}

// hostilePasswds are /etc/passwd contents (made by a shell script in the
// container) for which both exec paths must find the same HOME, quickly:
// the HOME lookup reads the container's file when the exec has no HOME.
var hostilePasswds = []struct{ name, script string }{
	{"dev-zero", `ln -sf /dev/zero /etc/passwd && [ -c /etc/passwd ]`},
	// One 1 MiB line whose first 4 KiB look like an entry for UID 0.
	{"1MiB-line", `busybox yes 0:0:0:0:0:/evil: | tr -d '\n' | head -c 1048576 > /etc/passwd && [ $(wc -c < /etc/passwd) = 1048576 ]`},
	// bufio.Scanner's limit: a line of 65535 bytes and its newline fits,
	// one of 65536 does not.
	// (That line, all "x", is an entry for UID 0 with an empty home.)
	{"line-65535", `head -c 65535 /dev/zero | tr '\0' x > /etc/passwd && printf '\nroot:x:0:0::/after:/bin/sh\n' >> /etc/passwd && [ $(wc -c < /etc/passwd) = 65563 ]`},
	{"line-65536", `head -c 65536 /dev/zero | tr '\0' x > /etc/passwd && printf '\nroot:x:0:0::/after:/bin/sh\n' >> /etc/passwd && [ $(wc -c < /etc/passwd) = 65564 ]`},
	{"line-65535-last", `head -c 65535 /dev/zero | tr '\0' 0 > /etc/passwd && [ $(wc -c < /etc/passwd) = 65535 ]`},
	{"many-lines", `busybox yes x:x:1:1::/one:/bin/sh | head -n 20000 > /etc/passwd && echo 'root:x:0:0::/last:/bin/sh' >> /etc/passwd`},
	// parseLine: missing fields are empty (UID 0, home ""), numbers as
	// strconv.Atoi reads them, the line trimmed.
	{"short-line", `printf 'garbage\nroot:x:0:0::/root:/bin/sh\n' > /etc/passwd`},
	{"signed-uid", `printf 'a:x:-1:0::/minus:/bin/sh\nb:x:+0:0::/plus:/bin/sh\n' > /etc/passwd`},
	{"spaces", `printf '  \t\nroot:x:0:0::/trim:/bin/sh \t\r\n' > /etc/passwd`},
	{"directory", `rm -f /etc/passwd; mkdir /etc/passwd`},
}

// TestExecPathsAgreeHostilePasswd: with a hostile /etc/passwd in the
// container, both exec paths give the exec the same HOME, each within a
// second. (A FIFO there blocks libcontainer's path until the exec's
// timeout, as runc's os.Open does; the fast path takes it as unreadable,
// HOME=/, at once: checked on the fast path only.)
func TestExecPathsAgreeHostilePasswd(t *testing.T) {
	regAddr, image := testImage(t)
	ctrs := map[string]string{}
	daemons := map[string]*daemon{}
	for _, path := range []string{"fast", "libcontainer"} {
		d := newDaemon(t, regAddr)
		if path == "libcontainer" {
			d.Env = append(d.Env, "PEAPOD_EXEC_PATH=libcontainer")
		}
		d.Start()
		if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
			t.Fatal(err)
		}
		podCfg := podConfig("xp-passwd", t.TempDir())
		run := runPod(t, d, podCfg)
		ctrs[path] = startContainer(t, d, run.PodSandboxId, podCfg, containerConfig("xp-passwd", image, "sleep", "1000"))
		daemons[path] = d
	}
	probe := func(path string, timeout int64) (string, time.Duration) {
		d := daemons[path]
		start := time.Now()
		resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctrs[path],
			Cmd: []string{"sh", "-c", `echo "HOME=[$HOME] set: $(env | grep -c ^HOME=)"`}, Timeout: timeout})
		took := time.Since(start)
		if err != nil {
			return "error " + err.Error(), took
		}
		return fmt.Sprintf("%sstderr %q exit %d", resp.Stdout, resp.Stderr, resp.ExitCode), took
	}
	for _, tc := range hostilePasswds {
		t.Run(tc.name, func(t *testing.T) {
			out := map[string]string{}
			for path, d := range daemons {
				resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctrs[path],
					Cmd: []string{"sh", "-c", "rm -rf /etc/passwd; " + tc.script}, Timeout: 20})
				if err != nil || resp.ExitCode != 0 {
					t.Fatalf("%s: make /etc/passwd: %v %+v", path, err, resp)
				}
				var took time.Duration
				out[path], took = probe(path, 10)
				if took > time.Second {
					t.Errorf("%s: the exec took %v", path, took)
				}
			}
			if out["fast"] != out["libcontainer"] {
				t.Errorf("the exec paths disagree:\n--- fast\n%s\n--- libcontainer\n%s", out["fast"], out["libcontainer"])
			} else {
				t.Logf("both paths: %s", out["fast"])
			}
		})
	}
	t.Run("fifo", func(t *testing.T) {
		for path, d := range daemons {
			resp, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctrs[path],
				Cmd: []string{"sh", "-c", "rm -rf /etc/passwd; busybox mkfifo /etc/passwd && [ -p /etc/passwd ]"}, Timeout: 20})
			if err != nil || resp.ExitCode != 0 {
				t.Fatalf("%s: make /etc/passwd: %v %+v", path, err, resp)
			}
		}
		out, took := probe("fast", 10)
		if took > time.Second || !strings.HasPrefix(out, "HOME=[/] set: 1") {
			t.Errorf("fast path with a FIFO /etc/passwd: %s in %v", out, took)
		}
		// Not waited for to its end: the exec's timeout does not cover
		// libcontainer's setns init, blocked before its execve.
		c, cancel := context.WithTimeout(ctx(t), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := daemons["libcontainer"].RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctrs["libcontainer"],
			Cmd: []string{"true"}, Timeout: 1})
		t.Logf("libcontainer path with a FIFO /etc/passwd: %v after %v", err, time.Since(start).Round(time.Millisecond))
	})
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// appArmorEnabled says whether the kernel enforces AppArmor here, as
// libcontainer checks it.
func appArmorEnabled() bool {
	if _, err := os.Stat("/sys/kernel/security/apparmor"); err != nil {
		return false
	}
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.HasPrefix(string(b), "Y")
}
