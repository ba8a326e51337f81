package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestLogDiskFull: the pod's log directory is a 64 KiB tmpfs. When it is
// full the container keeps running and writing (its output is dropped, not
// blocked on), ContainerStatus and the daemon's log report the failure,
// and the file holds whole lines only. With room again logging resumes by
// itself, and a rename + ReopenContainerLog goes on as usual.
func TestLogDiskFull(t *testing.T) {
	d, image := readyDaemon(t)
	logDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "peapod-it-logfull", logDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	c := ctx(t)
	podCfg := podConfig("logfull", logDir)
	pod := runPod(t, d, podCfg)
	t.Cleanup(func() {
		// The keeper holds the log open: the pod goes before the mount.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if d.RT != nil {
			d.RT.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
			d.RT.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		}
		if err := unix.Unmount(logDir, 0); err != nil {
			t.Errorf("unmount the log tmpfs: %v", err)
			unix.Unmount(logDir, unix.MNT_DETACH)
		}
	})
	cfg := containerConfig("filler", image, "sh", "-c",
		"i=0; while true; do i=$((i+1)); echo line-$i-padding-padding-padding-padding; echo $i > /tmp/count; [ $((i % 20)) = 0 ] && sleep 0.02; done")
	ctr := startContainer(t, d, pod.PodSandboxId, podCfg, cfg)
	logPath := filepath.Join(logDir, "filler.log")

	var msg string
	waitFor(t, 60*time.Second, "ContainerStatus to report the full disk", func() bool {
		msg = containerStatus(t, d, ctr).GetMessage()
		return strings.Contains(strings.ToLower(msg), "no space left on device")
	})
	t.Logf("status message: %s", msg)
	// The shell truncates /tmp/count before it writes it: an empty read
	// is that instant, not a stopped counter, so read again.
	counter := func() int {
		for try := 0; ; try++ {
			r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"cat", "/tmp/count"}, Timeout: 10})
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			if n, err := strconv.Atoi(strings.TrimSpace(string(r.Stdout))); err == nil || try == 9 {
				return n
			}
		}
	}
	before := counter()
	time.Sleep(500 * time.Millisecond)
	if after := counter(); after <= before || containerStatus(t, d, ctr).State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("the container is blocked by the full disk: counter %d then %d", before, after)
	}
	logged, _ := os.ReadFile(d.LogPath)
	if !strings.Contains(string(logged), "container log write failed") {
		t.Errorf("the daemon's log does not report the failed log writes")
	}
	lastFull := checkWholeLines(t, logPath, 0)

	// Room again: writing resumes without any request, and the status
	// message clears.
	if out, err := exec.Command("mount", "-o", "remount,size=4m", logDir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v: %s", err, out)
	}
	waitFor(t, 30*time.Second, "the log failure to clear", func() bool {
		return containerStatus(t, d, ctr).GetMessage() == ""
	})
	waitFor(t, 30*time.Second, "new lines in the log", func() bool {
		return checkWholeLines(t, logPath, 0) > lastFull
	})
	if !strings.Contains(readFile(t, d.LogPath), "container log writes work again") {
		t.Errorf("the daemon's log does not report that log writes work again")
	}

	// And rotation works as usual on the same file system.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.ReopenContainerLog(c, &runtimeapi.ReopenContainerLogRequest{ContainerId: ctr}); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	rotatedLast := checkWholeLines(t, logPath+".1", 0)
	waitFor(t, 30*time.Second, "lines in the reopened log", func() bool {
		_, err := os.Stat(logPath)
		return err == nil && checkWholeLines(t, logPath, rotatedLast) > rotatedLast
	})
}

// The timestamp in full: a fragment the keeper failed to cut would run into
// the next line's and no longer match.
var criLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout F line-(\d+)-padding-padding-padding-padding$`)

// checkWholeLines checks that every line of the CRI log at path is whole
// and that the numbers grow (lines may be missing: dropped on a full disk)
// from above after; it returns the last number.
func checkWholeLines(t *testing.T, path string, after int) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A last line without its newline is one being written, or one the
	// full disk cut short that the keeper is about to truncate away (it
	// writes, then cuts back what a failed write left): the kubelet's
	// reader waits for the rest of such a line too. One left anywhere else
	// is an error, and the checks after the disk has room again see it.
	text := string(data)
	text = text[:strings.LastIndexByte(text, '\n')+1]
	last := after
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if line == "" {
			continue
		}
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("%s: not a whole CRI log line: %q", path, line)
		}
		n, _ := strconv.Atoi(m[1])
		if n <= last {
			t.Fatalf("%s: line %d after %d", path, n, last)
		}
		last = n
	}
	return last
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
