package integration

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

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
for fd in 0 1 2; do echo "fd $fd: $(stat -L -c '%u %F' /proc/$$/fd/$fd)"; done
cat /proc/$$/limits
echo ---
env
echo ---
probe keyctl; probe mount; probe ids
`

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
			d.env = append(d.env, "PEAPOD_EXEC_PATH=libcontainer")
		}
		d.start()
		if _, err := d.img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
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
	}
	ids := regexp.MustCompile(`[0-9a-f]{64}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
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
				resp, err := d.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"sh", "-c", execProbe}, Timeout: 20})
				if err != nil {
					t.Fatalf("%s: exec: %v", path, err)
				}
				out[path] = ids.ReplaceAllString(string(resp.Stdout)+"stderr:\n"+string(resp.Stderr), "ID") + fmt.Sprintf("exit %d\n", resp.ExitCode)
				// Commands that cannot run: the shell's exit codes, the
				// command named on stderr.
				for _, cmd := range [][]string{{"/no/such/tool"}, {"no-such-tool"}, {"/etc/passwd"}, {"/tmp"}} {
					resp, err := d.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: cmd, Timeout: 20})
					if err != nil {
						out[path] += fmt.Sprintf("%s: %s\n", cmd[0], ids.ReplaceAllString(err.Error(), "ID"))
						continue
					}
					out[path] += fmt.Sprintf("%s: exit %d, stderr %q\n", cmd[0], resp.ExitCode, resp.Stderr)
				}
				log, _ := os.ReadFile(d.logPath)
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

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
