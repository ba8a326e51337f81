package integration

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeletMaxMsg is the largest message the kubelet's CRI client receives
// (k8s.io/cri-client's maxMsgSize): an ExecSync answer above it is lost.
const kubeletMaxMsg = 16 << 20

// TestEscapeExecSyncFlood: an exec probe is the pod author's command, run
// by the daemon with its output collected in the daemon's memory. Output
// without end, on both streams, must neither grow the daemon past a
// bound nor lose the answer: a probe that prints more than the kubelet
// accepts gets its output cut, not an error; a probe that never ends is
// killed at its timeout, or when its caller leaves, its processes gone;
// concurrent floods cost the daemon what the cut allows, no more.
func TestEscapeExecSyncFlood(t *testing.T) {
	d, image := readyDaemon(t)
	podCfg := podConfig("execflood", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("target", image, "sleep", "1000"))
	daemonPID := d.Cmd.Process.Pid
	recv := grpc.MaxCallRecvMsgSize(1 << 30) // see what the daemon would send

	// 40 MB on each stream, then a marker on each: the answer must arrive,
	// fit the kubelet's limit, and keep the first bytes of each stream.
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutScale)
	defer cancel()
	start := time.Now()
	r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Timeout: 50,
		Cmd: []string{"sh", "-c", "echo OUT-FIRST; echo ERR-FIRST >&2; head -c 40000000 /dev/zero; head -c 40000000 /dev/zero >&2; exit 3"}}, recv)
	if err != nil {
		t.Errorf("ExecSync of 80 MB output: %v (after %v)", err, time.Since(start))
	} else {
		size := len(r.Stdout) + len(r.Stderr)
		t.Logf("80 MB output: code %d, stdout %d bytes, stderr %d bytes, in %v", r.ExitCode, len(r.Stdout), len(r.Stderr), time.Since(start))
		if r.ExitCode != 3 {
			t.Errorf("exit code %d, want 3", r.ExitCode)
		}
		if size > kubeletMaxMsg-64<<10 {
			t.Errorf("answer holds %d bytes of output: above what the kubelet receives (%d)", size, kubeletMaxMsg)
		}
		if !strings.HasPrefix(string(r.Stdout), "OUT-FIRST\n") || !strings.HasPrefix(string(r.Stderr), "ERR-FIRST\n") {
			t.Errorf("the first bytes of a stream were not kept: stdout %.20q, stderr %.20q", r.Stdout, r.Stderr)
		}
	}

	// A probe that never ends, flooding both streams: killed at its timeout.
	start = time.Now()
	_, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Timeout: 3,
		Cmd: []string{"sh", "-c", "cat /dev/zero /dev/full >&2 & exec cat /dev/zero /dev/null"}}, recv)
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("endless ExecSync = %v, want DeadlineExceeded", err)
	}
	if took > 20*time.Second*timeoutScale {
		t.Errorf("endless ExecSync with timeout 3 s answered after %v", took)
	}
	t.Logf("endless flood: %v after %v", status.Code(err), took.Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the flooding exec's processes to be gone", func() bool {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Timeout: 10, Cmd: []string{"ps", "-o", "args"}})
		return err == nil && !strings.Contains(string(r.Stdout), "/dev/zero")
	})

	// Without a timeout the call lasts as long as its caller: a caller that
	// gives up (crictl exec --sync, Ctrl-C) ends the flood too.
	cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err = d.RT.ExecSync(cctx, &runtimeapi.ExecSyncRequest{ContainerId: ctr,
		Cmd: []string{"sh", "-c", "cat /dev/zero /dev/full >&2 & exec cat /dev/zero /dev/null"}}, recv)
	ccancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("endless ExecSync without a timeout, its caller gone after 3 s: %v", err)
	}
	waitFor(t, 10*time.Second, "the abandoned exec's processes to be gone", func() bool {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Timeout: 10, Cmd: []string{"ps", "-o", "args"}})
		return err == nil && !strings.Contains(string(r.Stdout), "/dev/zero")
	})

	// Concurrent floods: what each costs the daemon at its peak.
	const n = 8
	base := statusKB(t, daemonPID, "VmHWM")
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(context.Background(), 60*time.Second*timeoutScale)
			defer cancel()
			_, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Timeout: 50,
				Cmd: []string{"sh", "-c", "head -c 40000000 /dev/zero & head -c 40000000 /dev/zero >&2; wait"}}, recv)
			if err != nil {
				t.Logf("concurrent flood: %v", err)
			}
		}()
	}
	wg.Wait()
	peak := statusKB(t, daemonPID, "VmHWM")
	perExec := (peak - base) / n
	t.Logf("daemon peak resident memory %d KiB before, %d KiB after %d concurrent floods: %d KiB each", base, peak, n, perExec)
	// What is kept (16 MiB), the answer's encoding (16 MiB) and the
	// buffers' growth: 34 MiB measured; 48 MiB leaves the collector room.
	if perExec > 48<<10 {
		t.Errorf("each flooding ExecSync cost the daemon %d KiB at its peak (bound 48 MiB)", perExec)
	}
}
