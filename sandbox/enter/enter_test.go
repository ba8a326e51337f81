package enter

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// run executes this test binary as the helper (its constructor is linked
// in) with no namespace or cgroup to join, the given configuration tokens
// and full capabilities, and returns the report, the command's stdout and
// the command's wait status.
func run(t *testing.T, tokens ...string) (report, stdout string, ws unix.WaitStatus) {
	t.Helper()
	return runWith(t, helperRun{}, tokens...)
}

// helperRun is what runWith may change in how the helper runs: the pidfd
// it gets (default /dev/null, with ns=0), a start that installs a seccomp
// filter first, and a look at the command while it runs.
type helperRun struct {
	pidfd  *os.File
	start  func(name string, argv []string, attr *os.ProcAttr) (*os.Process, error)
	during func(pid int)
}

func runWith(t *testing.T, h helperRun, tokens ...string) (report, stdout string, ws unix.WaitStatus) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	all := ownCaps(t) // this host's root lacks some (CAP_SYS_RESOURCE)
	cfg := []string{"ns=0", "capb=" + all, "cape=" + all, "capp=" + all, "capi=0", "capa=0"}
	cfg = append(cfg, tokens...)
	cfgR, cfgW, _ := os.Pipe()
	repR, repW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	pidfd := devnull
	if h.pidfd != nil {
		pidfd = h.pidfd
	}
	start := os.StartProcess
	if h.start != nil {
		start = h.start
	}
	p, err := start("/proc/self/exe", []string{"enter.test", Command},
		&os.ProcAttr{Files: []*os.File{devnull, outW, outW, cfgR, repW, pidfd}})
	if err != nil {
		t.Fatal(err)
	}
	cfgR.Close()
	repW.Close()
	outW.Close()
	cfgW.WriteString(strings.Join(cfg, "\x00") + "\x00")
	cfgW.Close()
	rep, _ := io.ReadAll(repR)
	if pid, ok := strings.CutPrefix(strings.SplitN(string(rep), "\n", 2)[0], "pid "); ok && h.during != nil {
		n, _ := strconv.Atoi(pid)
		h.during(n)
	}
	out, _ := io.ReadAll(outR)
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	report = string(rep)
	if pid, ok := strings.CutPrefix(strings.SplitN(report, "\n", 2)[0], "pid "); ok {
		n, _ := strconv.Atoi(pid)
		if _, err := unix.Wait4(n, &ws, 0, nil); err != nil { // CLONE_PARENT: ours to reap
			t.Fatalf("wait for the command %d: %v", n, err)
		}
	}
	return report, string(out), ws
}

func TestEnterEnvironmentAndCwd(t *testing.T) {
	rep, out, ws := run(t, "uid=0", "gid=0", "cwd=/tmp", "arg=sh", "arg=-c", "arg=echo $HOME $DUP; pwd",
		"env=PATH=/usr/bin:/bin", "env=DUP=1", "env=HOME=", "env=DUP=2")
	if !strings.HasPrefix(rep, "pid ") || strings.Contains(rep, "error") || ws.ExitStatus() != 0 {
		t.Fatalf("report %q, status %v", rep, ws)
	}
	// The last DUP wins; an empty HOME is replaced by /etc/passwd's.
	if out != "/root 2\n/tmp\n" {
		t.Errorf("stdout %q", out)
	}
}

func TestEnterFailures(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tokens []string
		want   string
	}{
		{"not in PATH", []string{"arg=no-such-tool", "env=PATH=/usr/bin:/bin"}, `exec: "no-such-tool": executable file not found in $PATH`},
		{"no PATH", []string{"arg=sh"}, `exec: "sh": executable file not found in $PATH`},
		{"missing path", []string{"arg=/no/such/tool"}, `exec: "/no/such/tool": stat /no/such/tool: no such file or directory`},
		{"not executable", []string{"arg=/etc/passwd"}, "permission denied"},
		{"directory", []string{"arg=/tmp"}, "is a directory"},
		{"relative PATH", []string{"cwd=" + dir, "arg=tool", "env=PATH=.:/nonexistent"}, "cannot run executable found relative to current directory"},
		{"cwd missing", []string{"cwd=/no/such/dir", "arg=/bin/true"}, `chdir to cwd ("/no/such/dir") set in config.json failed: no such file or directory`},
		{"bad env", []string{"arg=/bin/true", "env=NOEQUALS"}, "missing '='"},
		{"bad token", []string{"bogus"}, "bad exec configuration token"},
		{"no command", nil, "exec needs a command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, _, ws := run(t, append([]string{"uid=0", "gid=0"}, tc.tokens...)...)
			if !strings.Contains(rep, "error ") || !strings.Contains(rep, tc.want) {
				t.Errorf("report %q, want an error with %q", rep, tc.want)
			}
			if strings.HasPrefix(rep, "pid ") && ws.ExitStatus() == 0 {
				t.Errorf("the command's process exited 0 after an error")
			}
		})
	}
}

func TestEnterCredentials(t *testing.T) {
	// uid 65534 with groups, no_new_privs and only CAP_NET_BIND_SERVICE
	// (bit 10) everywhere, ambient too.
	caps := strconv.FormatUint(1<<10, 16)
	rep, out, ws := run(t, "uid=65534", "gid=65534", "group=100", "group=200", "nnp=1",
		"capb="+caps, "cape="+caps, "capp="+caps, "capi="+caps, "capa="+caps, "umask=63",
		"rlimit=7:123:456", "cwd=/", "arg=/bin/sh", "arg=-c",
		"arg=grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/$$/status; umask; ulimit -n; ulimit -Hn",
		"env=PATH=/usr/bin:/bin")
	if strings.Contains(rep, "error") || ws.ExitStatus() != 0 {
		t.Fatalf("report %q, status %v", rep, ws)
	}
	want := "Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t100 200 \n" +
		"CapInh:\t0000000000000400\nCapPrm:\t0000000000000400\nCapEff:\t0000000000000400\nCapBnd:\t0000000000000400\nCapAmb:\t0000000000000400\n" +
		"NoNewPrivs:\t1\n0077\n123\n456\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

// ownCaps is this process's permitted set, in hex.
func ownCaps(t *testing.T) string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapPrm:\t"); ok {
			return strings.TrimLeft(v, "0")
		}
	}
	t.Fatal("no CapPrm in /proc/self/status")
	return ""
}

// TestEnterAppArmor: an exec asked to run under an AppArmor profile that
// cannot be applied (none loaded by that name, or no AppArmor in the
// kernel) fails as libcontainer's does; it never runs unconfined.
func TestEnterAppArmor(t *testing.T) {
	rep, _, ws := run(t, "uid=0", "gid=0", "apparmor=peapod-test-no-such-profile", "arg=/bin/true")
	if !strings.Contains(rep, "error apparmor failed to apply profile") {
		t.Errorf("report %q, want an error applying the profile", rep)
	}
	if strings.HasPrefix(rep, "pid ") && ws.ExitStatus() == 0 {
		t.Errorf("the command ran")
	}
	t.Logf("report: %s", strings.TrimSpace(rep))
}

// TestEnterAppArmorPrivateProcfs: the exec process writes its AppArmor
// attribute through a private procfs it mounts (subset=pid,
// hidepid=ptraceable), also once it has dropped to a user without
// capabilities: the attribute opens and only its write is refused, by the
// kernel (no AppArmor here: "invalid argument"; a profile not loaded in an
// AppArmor kernel: "no such file or directory").
func TestEnterAppArmorPrivateProcfs(t *testing.T) {
	rep, _, ws := run(t, "uid=65534", "gid=65534", "capb=0", "cape=0", "capp=0", "apparmor=peapod-test-no-such-profile", "arg=/bin/true")
	if !strings.Contains(rep, "error apparmor failed to apply profile: ") || strings.Contains(rep, "open exec attribute") {
		t.Errorf("report %q, want the attribute's write refused (not its open)", rep)
	}
	if strings.HasPrefix(rep, "pid ") && ws.ExitStatus() == 0 {
		t.Errorf("the command ran")
	}
	t.Logf("report: %s", strings.TrimSpace(rep))
}

// TestEnterAppArmorWithoutFsopen: where the new mount API is refused (a
// seccomp filter, here one failing fsopen with ENOSYS), the exec process
// mounts no private procfs and says so, before anything runs, in words
// the daemon recognizes (fastexec.go's failedStart: such execs then go
// through libcontainer); it never falls back to another /proc.
func TestEnterAppArmorWithoutFsopen(t *testing.T) {
	rep, _, ws := runWith(t, helperRun{start: startWithout(unix.SYS_FSOPEN)}, "uid=0", "gid=0", "apparmor=peapod-test-no-such-profile", "arg=/bin/true")
	if !strings.Contains(rep, "error private procfs unavailable: fsopen proc: function not implemented") {
		t.Errorf("report %q, want \"private procfs unavailable\"", rep)
	}
	if strings.HasPrefix(rep, "pid ") && ws.ExitStatus() == 0 {
		t.Errorf("the command ran")
	}
	// A failure that is no refusal (here ENOMEM) is worded so that the
	// daemon sends only that exec through libcontainer.
	rep, _, _ = runWith(t, helperRun{start: startRefusing(unix.SYS_FSMOUNT, unix.ENOMEM)}, "uid=0", "gid=0", "apparmor=peapod-test-no-such-profile", "arg=/bin/true")
	if !strings.Contains(rep, "error private procfs: fsmount: cannot allocate memory") {
		t.Errorf("report %q, want \"private procfs: fsmount: cannot allocate memory\"", rep)
	}
	// Without a profile nothing is mounted: the same filter is no matter.
	rep, out, ws := runWith(t, helperRun{start: startWithout(unix.SYS_FSOPEN)}, "uid=0", "gid=0", "arg=/bin/echo", "arg=ran")
	if strings.Contains(rep, "error") || ws.ExitStatus() != 0 || out != "ran\n" {
		t.Errorf("without a profile: report %q, status %v, stdout %q", rep, ws, out)
	}
}
