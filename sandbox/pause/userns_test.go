package pause

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func nsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func ownerIno(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatalf("NS_GET_USERNS %s: %v", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	return st.Ino
}

// With -U/-G the keeper stays in the host user namespace and its holder
// is in a new one that owns the pod's network, IPC, UTS and PID namespaces,
// which the keeper joined; the hostname and sysctls land there.
func TestPauseUserNamespace(t *testing.T) {
	needRoot(t)
	cmd, msg := startPause(t, 0, "-h", "uns-host", "-s", "net.ipv4.ip_unprivileged_port_start=2000",
		"-s", "kernel.shmmax=123456", "-s", "fs.mqueue.msg_max=20", "-P",
		"-U", "0 200000 65536\n", "-G", "0 200000 65536\n")
	holder, ok := strings.CutPrefix(msg, "ok ")
	if !ok || holder == "0" {
		t.Fatalf("pause reported %q, want ok <holder>", msg)
	}
	keeper := "/proc/" + itoa(cmd.Process.Pid) + "/ns/"
	hp := "/proc/" + holder + "/"
	if nsIno(t, keeper+"user") != nsIno(t, "/proc/self/ns/user") {
		t.Error("the keeper left the host's user namespace")
	}
	userns := nsIno(t, hp+"ns/user")
	if userns == nsIno(t, "/proc/self/ns/user") {
		t.Fatal("the holder is in the host's user namespace")
	}
	for _, ns := range []string{"net", "ipc", "uts"} {
		if nsIno(t, keeper+ns) != nsIno(t, hp+"ns/"+ns) {
			t.Errorf("the keeper is not in the holder's %s namespace", ns)
		}
		if ownerIno(t, keeper+ns) != userns {
			t.Errorf("the pod's %s namespace is not owned by the pod's user namespace", ns)
		}
	}
	if ownerIno(t, hp+"ns/pid") != userns {
		t.Error("the pod's PID namespace is not owned by the pod's user namespace")
	}
	if status, _ := os.ReadFile(hp + "status"); !strings.Contains(string(status), "NSpid:\t"+holder+"\t1\n") {
		t.Errorf("the holder is not PID 1 of its namespace:\n%s", status)
	}
	for _, f := range []string{"uid_map", "gid_map"} {
		if data, _ := os.ReadFile(hp + f); strings.Join(strings.Fields(string(data)), " ") != "0 200000 65536" {
			t.Errorf("holder %s = %q", f, data)
		}
	}
	if out, err := exec.Command("nsenter", "--uts="+keeper+"uts", "hostname").Output(); err != nil || strings.TrimSpace(string(out)) != "uns-host" {
		t.Errorf("hostname in the pod's UTS namespace = %q, %v", out, err)
	}
	if out, err := exec.Command("nsenter", "--net="+keeper+"net", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").Output(); err != nil || strings.TrimSpace(string(out)) != "2000" {
		t.Errorf("sysctl in the pod's network namespace = %q, %v", out, err)
	}
	// IPC keys are written as the namespace's root (the host's is refused).
	if out, err := exec.Command("nsenter", "--ipc="+keeper+"ipc", "cat", "/proc/sys/kernel/shmmax", "/proc/sys/fs/mqueue/msg_max").Output(); err != nil || strings.Join(strings.Fields(string(out)), " ") != "123456 20" {
		t.Errorf("IPC sysctls in the pod's IPC namespace = %q, %v", out, err)
	}
	if status, _ := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/status"); !strings.Contains(string(status), "Uid:\t0\t0\t0\t0\n") {
		t.Errorf("the keeper is not back to root after the IPC sysctls:\n%s", status)
	}
	// The holder dies with the keeper.
	cmd.Process.Kill()
	cmd.Wait()
	pid, _ := strconv.Atoi(holder)
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil && procState(pid) != "Z" {
		if time.Now().After(deadline) {
			t.Fatal("the holder outlived the keeper")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPauseUserNamespaceErrors(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-U", "0 200000 65536\n"}, "-U and -G go together"},
		{[]string{"-U", "garbage\n", "-G", "0 200000 65536\n"}, "write uid_map"},
		{[]string{"-U", "0 200000 65536\n", "-G", "0 200000 0\n"}, "write gid_map"},
	} {
		cmd, msg := startPause(t, 0, tc.args...)
		if !strings.HasPrefix(msg, tc.want) {
			t.Errorf("%q: reported %q, want prefix %q", tc.args, msg, tc.want)
		}
		if err := cmd.Wait(); err == nil {
			t.Errorf("%q: pause exited 0 after an error", tc.args)
		}
	}
}
