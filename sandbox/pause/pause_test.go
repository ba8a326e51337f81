package pause

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startPause runs this test binary as the pause process (the constructor
// takes over before the Go runtime when argv[1] is "pod-pause") and returns
// what it reports on fd 3.
func startPause(t *testing.T, flags uintptr, args ...string) (*exec.Cmd, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], append([]string{Command}, args...)...)
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
