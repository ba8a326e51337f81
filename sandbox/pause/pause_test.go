package pause

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startPause runs the keeper (keeperBin) as the pause process and returns
// what it reports on fd 3.
func startPause(t *testing.T, flags uintptr, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return startPauseOf(t, keeperBin, flags, args...)
}

// startPauseOf runs bin as the pause process.
func startPauseOf(t *testing.T, bin string, flags uintptr, args ...string) (*exec.Cmd, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bin, append([]string{Command}, args...)...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	msg, _ := io.ReadAll(r)
	return cmd, strings.TrimSpace(string(msg))
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for namespaces")
	}
}

func TestPauseSetsHostnameAndExitsOnTerm(t *testing.T) {
	needRoot(t)
	cmd, msg := startPause(t, syscall.CLONE_NEWUTS, "-h", "pea-host")
	if msg != "ok 0" {
		t.Fatalf("pause reported %q", msg)
	}
	out, err := exec.Command("nsenter", "--uts=/proc/"+itoa(cmd.Process.Pid)+"/ns/uts", "hostname").Output()
	if err != nil || strings.TrimSpace(string(out)) != "pea-host" {
		t.Fatalf("hostname in pause's namespace = %q, %v", out, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pause exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pause ignored SIGTERM")
	}
}

func TestPauseAsPID1ExitsOnTerm(t *testing.T) {
	needRoot(t)
	cmd, msg := startPause(t, syscall.CLONE_NEWPID)
	if msg != "ok 0" {
		t.Fatalf("pause reported %q", msg)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("pause as PID 1 ignored SIGTERM")
	}
}

func TestPauseReportsErrors(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-s", "net.no.such.key=1"}, "set sysctl net.no.such.key=1"},
		{[]string{"-s", "novalue"}, "set sysctl novalue"},
		{[]string{"--bogus"}, "unknown argument --bogus"},
	} {
		cmd, msg := startPause(t, syscall.CLONE_NEWNET, tc.args...)
		if !strings.HasPrefix(msg, tc.want) {
			t.Errorf("%v: reported %q, want prefix %q", tc.args, msg, tc.want)
		}
		if err := cmd.Wait(); err == nil {
			t.Errorf("%v: pause exited 0 after an error", tc.args)
		}
	}
}

func TestPauseSetsNamespacedSysctl(t *testing.T) {
	needRoot(t)
	cmd, msg := startPause(t, syscall.CLONE_NEWNET, "-s", "net.ipv4.ip_unprivileged_port_start=2000")
	if msg != "ok 0" {
		t.Fatalf("pause reported %q", msg)
	}
	out, err := exec.Command("nsenter", "--net=/proc/"+itoa(cmd.Process.Pid)+"/ns/net", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").Output()
	if err != nil || strings.TrimSpace(string(out)) != "2000" {
		t.Fatalf("sysctl in pause's namespace = %q, %v", out, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestConstructorKeeper runs the keeper from this test binary's ELF
// constructor (pause.go), as the daemon does when it has no keeper binary:
// the same entry as the shipped binary's main, with a PID holder.
func TestConstructorKeeper(t *testing.T) {
	needRoot(t)
	cmd, msg := startPauseOf(t, os.Args[0], syscall.CLONE_NEWUTS, "-h", "ctor-host", "-P")
	if f := strings.Fields(msg); len(f) != 2 || f[0] != "ok" || f[1] == "0" {
		t.Fatalf("pause reported %q, want ok and the holder's pid", msg)
	}
	out, err := exec.Command("nsenter", "--uts=/proc/"+itoa(cmd.Process.Pid)+"/ns/uts", "hostname").Output()
	if err != nil || strings.TrimSpace(string(out)) != "ctor-host" {
		t.Fatalf("hostname in pause's namespace = %q, %v", out, err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := waitTimeout(cmd, 5*time.Second); err != nil {
		t.Fatalf("pause exit after SIGTERM: %v", err)
	}
}

// TestKeeperBuild: cmd/peapod-pause/build.sh makes a static binary (no
// program interpreter, no dynamic section) linked against musl, or glibc
// when PEAPOD_KEEPER_LIBC=glibc asks for it, that refuses to run by hand.
func TestKeeperBuild(t *testing.T) {
	if os.Getenv("PEAPOD_BIN") != "" {
		t.Skip("PEAPOD_BIN: not the keeper build.sh made")
	}
	f, err := elf.Open(keeperBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static", keeperBin, p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Errorf("%s has a .dynamic section", keeperBin)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s is not stripped", keeperBin)
	}
	data, err := os.ReadFile(keeperBin)
	if err != nil {
		t.Fatal(err)
	}
	want := "musl"
	if os.Getenv("PEAPOD_KEEPER_LIBC") == "glibc" {
		want = "glibc"
	}
	if m := regexp.MustCompile(`peapod-keeper-libc=([a-z]+)`).FindSubmatch(data); m == nil || string(m[1]) != want {
		t.Errorf("%s: libc marker %q, want peapod-keeper-libc=%s (is musl-gcc installed? Debian: musl-tools)", keeperBin, m, want)
	}
	out, err := exec.Command(keeperBin).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "started by the peapod daemon") {
		t.Errorf("%s without pod-pause: %v, %q; want exit 2 and a word on who starts it", keeperBin, err, out)
	}
}

func waitTimeout(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("not exited within %v", d)
	}
}
