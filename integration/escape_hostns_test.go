package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeHostNamespaces: a pod with hostPID, hostIPC and hostNetwork
// (TestEscapeSweep covers own-PID, shared-PID, userns and hostNetwork
// alone) sees the daemon and every pod's keeper in its PID namespace, the
// host's SysV IPC and /dev/shm, and the host's abstract unix sockets and
// loopback ports. A container of it without CAP_SYS_PTRACE must reach no
// descriptor, memory, environment or root of those processes (they hold
// capabilities it lacks), and peapod must place no SysV object, /dev/shm
// file or abstract socket there. Signals are not checked: root with the
// default CAP_KILL may signal any root process of its PID namespace, which
// is what hostPID grants (docs/security.md).
func TestEscapeHostNamespaces(t *testing.T) {
	d, image := readyDaemon(t)
	other, otherCfg := shapePod(t, d, podShape{name: "other"}, "other", 0)
	startContainer(t, d, other, otherCfg, containerConfig("victim", image, "sleep", "1000"))
	otherKeeper, _, _ := podProcs(t, d, other)

	podCfg := podConfig("hostns", t.TempDir())
	ns := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Network: runtimeapi.NamespaceMode_NODE}
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}
	pod := runPod(t, d, podCfg).PodSandboxId
	keeper, _, _ := podProcs(t, d, pod)
	cfg := containerConfig("prober", image, "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}}
	prober := startContainer(t, d, pod, podCfg, cfg)

	targets := map[string]int{"daemon": d.Cmd.Process.Pid, "own keeper": keeper, "other pod's keeper": otherKeeper}
	// The control: the probe reaches a process of the container itself.
	if out, _ := execAll(t, d, prober, "sh", "-c", procProbe("/proc/self")); !strings.Contains(out, "READ environ") || !strings.Contains(out, "READLINK fd/") {
		t.Fatalf("the probe cannot read the container's own process: %q", out)
	}
	for what, pid := range targets {
		out, code := execAll(t, d, prober, "sh", "-c", procProbe("/proc/"+strconv.Itoa(pid)))
		t.Logf("%s (PID %d) from the hostPID container: %s", what, pid, strings.Join(strings.Fields(out), " "))
		if code != 0 || !strings.Contains(out, "PROBE-DONE") {
			t.Errorf("%s: probe failed (%d): %q", what, code, out)
		}
		for _, got := range []string{"READ", "LIST", "READLINK", "OPEN"} {
			if strings.Contains(out, got) {
				t.Errorf("%s (PID %d) reached from a container without CAP_SYS_PTRACE: %q", what, pid, out)
				break
			}
		}
	}
	// What peapod leaves in the host's IPC namespace and network namespace.
	for _, f := range []string{"/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) > 1 {
			t.Logf("%s holds %d objects (the host's own, if any)", f, len(lines)-1)
			for _, pid := range targets {
				for _, l := range lines[1:] {
					if f := strings.Fields(l); len(f) > 7 && (f[6] == strconv.Itoa(pid) || f[7] == strconv.Itoa(pid)) {
						t.Errorf("a SysV object made by peapod process %d: %s", pid, l)
					}
				}
			}
		}
	}
	if out, _ := execAll(t, d, prober, "ls", "-A", "/dev/shm"); strings.TrimSpace(out) != "" {
		t.Logf("the host's /dev/shm holds %q", out)
	}
	sockets := socketInodes(t, d.Cmd.Process.Pid, keeper, otherKeeper)
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) >= 8 && strings.HasPrefix(f[7], "@") && sockets[f[6]] != "" {
			t.Errorf("%s holds the abstract unix socket %s, reachable from every hostNetwork pod", sockets[f[6]], f[7])
		}
	}
}

// procProbe is a script that tries what a ptrace access check guards in
// the /proc directory p and prints what it reached.
func procProbe(p string) string {
	return fmt.Sprintf(`p=%s
[ -d $p ] || { echo NOT-VISIBLE; exit 0; }
for f in environ maps auxv; do head -c 64 $p/$f >/dev/null 2>&1 && echo "READ $f"; done
head -c 1 $p/mem >/dev/null 2>&1 && echo "READ mem"
for fd in $(ls $p/fd/ 2>/dev/null); do readlink $p/fd/$fd >/dev/null 2>&1 && echo "READLINK fd/$fd"; head -c 1 $p/fd/$fd >/dev/null 2>&1 && echo "OPEN fd/$fd"; done
ls $p/root/ >/dev/null 2>&1 && echo "LIST root"
ls $p/cwd/ >/dev/null 2>&1 && echo "LIST cwd"
readlink $p/exe >/dev/null 2>&1 && echo "READLINK exe"
[ -n "$(ls $p/map_files/ 2>/dev/null)" ] && echo "LIST map_files"
echo PROBE-DONE`, p)
}

// socketInodes maps the socket inodes the processes hold to a description.
func socketInodes(t *testing.T, pids ...int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			l, err := os.Readlink(filepath.Join(dir, e.Name()))
			if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
				out[strings.TrimSuffix(ino, "]")] = fmt.Sprintf("process %d (fd %s)", pid, e.Name())
			}
		}
	}
	return out
}
