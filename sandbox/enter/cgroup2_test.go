package enter

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cgroup2Dir makes a cgroup in this host's cgroup2 hierarchy (the only one
// on cgroup v2, /sys/fs/cgroup/unified on a hybrid host) and returns its
// path and its path as /proc/PID/cgroup names it.
func cgroup2Dir(t *testing.T) (dir, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := ""
	for _, r := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(r, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = r
			break
		}
	}
	if root == "" {
		t.Skip("no cgroup2 hierarchy")
	}
	name = "/peapod-enter-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	dir = filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test started there is gone (reaped) by now.
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	return dir, name
}

// TestEnterCgroup2: the exec process is born in the cgroup2 directory it
// is given and, when the container has a cgroup namespace, joins that
// namespace: from the host it is in the container's cgroup, from inside
// at the namespace's root. (Joining the cgroup namespace before the clone
// made clone3 fail with ENOENT: the helper's own cgroup is outside it.)
func TestEnterCgroup2(t *testing.T) {
	dir, name := cgroup2Dir(t)
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	// A stand-in for the container's init: born in the cgroup, in a
	// cgroup namespace of its own rooted there.
	init, err := os.StartProcess("/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWCGROUP, UseCgroupFD: true, CgroupFD: int(cg.Fd())}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { init.Kill(); init.Wait() }()
	pidfd, err := unix.PidfdOpen(init.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidf := os.NewFile(uintptr(pidfd), "pidfd")
	defer pidf.Close()

	for _, tc := range []struct {
		name, ns, inside string
	}{
		{"no cgroup namespace", "ns=0", "0::" + name + "\n"},
		{"cgroup namespace", "ns=33554432", "0::/\n"}, // CLONE_NEWCGROUP
	} {
		t.Run(tc.name, func(t *testing.T) {
			var host string
			rep, out, ws := runWith(t, helperRun{pidfd: pidf, during: func(pid int) {
				data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
				if err != nil {
					t.Errorf("the command's cgroup: %v", err)
				}
				host = string(data)
			}}, tc.ns, "cg2="+dir, "uid=0", "gid=0", "arg=/bin/sh", "arg=-c", "arg=cat /proc/self/cgroup; exec sleep 1",
				"env=PATH=/usr/bin:/bin")
			if !strings.HasPrefix(rep, "pid ") || strings.Contains(rep, "error") || ws.ExitStatus() != 0 {
				t.Fatalf("report %q, status %v", rep, ws)
			}
			if !strings.HasSuffix(host, "0::"+name+"\n") {
				t.Errorf("from the host the command's cgroups are\n%s\nwant 0::%s", host, name)
			}
			if !strings.HasSuffix("\n"+out, "\n"+tc.inside) { // after the v1 lines of a hybrid host
				t.Errorf("inside, /proc/self/cgroup is %q, want %q", out, tc.inside)
			}
		})
	}
}

// TestEnterWithoutClone3: where clone3 is refused (a kernel before 5.3,
// or a seccomp filter such as an old container engine's default), the
// helper starts nothing and says so in words the daemon recognizes
// (fastexec.go's failedStart), which then execs through libcontainer.
func TestEnterWithoutClone3(t *testing.T) {
	dir, _ := cgroup2Dir(t)
	rep, _, _ := runWith(t, helperRun{start: startWithout(unix.SYS_CLONE3)}, "cg2="+dir, "uid=0", "gid=0", "arg=/bin/true")
	if !strings.HasPrefix(rep, "error clone3 unavailable") || !strings.Contains(rep, "function not implemented") {
		t.Errorf("report %q, want an error that starts with \"clone3 unavailable\"", rep)
	}
}

// startWithout returns a start of a process under a seccomp filter that
// fails system call nr with ENOSYS. The filter is installed on a locked
// thread that forks the process and then ends with its goroutine: the
// test's other threads stay unfiltered.
func startWithout(nr uint32) func(name string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	return startRefusing(nr, unix.ENOSYS)
}

// startRefusing is startWithout with another errno.
func startRefusing(nr uint32, errno unix.Errno) func(name string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	return func(name string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
		return startFiltered(nr, errno, name, argv, attr)
	}
}

func startFiltered(nr uint32, errno unix.Errno, name string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	type result struct {
		p   *os.Process
		err error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		filter := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: nr, Jt: 0, Jf: 1},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(errno)},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		}
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
			done <- result{nil, err}
			return
		}
		p, err := os.StartProcess(name, argv, attr)
		done <- result{p, err}
	}()
	r := <-done
	return r.p, r.err
}
