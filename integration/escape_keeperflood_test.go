package integration

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// keeperFloodScript is hostile output for the keeper's log writer
// (sandbox/pause/log.c), three rounds of: a 30 MB line without a newline
// (NUL bytes), 300,000 one-byte writes, 4 MB of random bytes (invalid
// UTF-8, stray \r and \n), and \r-laden short lines.
const keeperFloodScript = `i=0
while [ $i -lt 3 ]; do
	head -c 30000000 /dev/zero
	dd if=/dev/zero bs=1 count=300000 2>/dev/null
	head -c 4000000 /dev/urandom
	printf 'a\rb\r\r\n\r\n'
	i=$((i+1))
done
echo
echo FLOOD-DONE
sleep 1000`

// TestEscapeKeeperOutputFlood: a container's hostile output must neither
// grow the pod's keeper without bound nor stall the rest of the pod: while
// it floods, a sibling container is created and started, its first line
// reaches its log, an exec answers, and another pod starts, each within a
// bound; the keeper's peak resident memory stays small; every log line
// stays within the 16 KiB cut.
func TestEscapeKeeperOutputFlood(t *testing.T) {
	d, image := readyDaemon(t)
	logDir := t.TempDir()
	podCfg := podConfig("flood", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	keeper := d.KeeperPID(ctx(t), pod)
	if keeper <= 0 {
		t.Fatal("no keeper PID in the verbose status")
	}
	baseRSS := statusKB(t, keeper, "VmRSS")

	var peak int64
	var mu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if v := statusKBQuiet(keeper, "VmHWM"); v > 0 {
				mu.Lock()
				if v > peak {
					peak = v
				}
				mu.Unlock()
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-sampled
	}()

	flood := startContainer(t, d, pod, podCfg, containerConfig("flood", image, "sh", "-c", keeperFloodScript))
	floodLog := filepath.Join(logDir, "flood.log")
	waitFor(t, 20*time.Second, "the flood to reach its log", func() bool {
		st, err := os.Stat(floodLog)
		return err == nil && st.Size() > 1<<20
	})

	// The rest of the pod, and the node, while it floods.
	t0 := time.Now()
	quiet := startContainer(t, d, pod, podCfg, containerConfig("quiet", image, "sh", "-c", "echo QUIET-UP; sleep 1000"))
	startTook := time.Since(t0)
	waitFor(t, 10*time.Second, "the sibling's first line in its log", func() bool {
		b, _ := os.ReadFile(filepath.Join(logDir, "quiet.log"))
		return bytes.Contains(b, []byte("QUIET-UP"))
	})
	lineTook := time.Since(t0)
	t1 := time.Now()
	if out, code := execAll(t, d, quiet, "echo", "EXEC-OK"); code != 0 || !strings.Contains(out, "EXEC-OK") {
		t.Errorf("exec in the sibling during the flood: code %d, %q", code, out)
	}
	execTook := time.Since(t1)
	t2 := time.Now()
	other := runPod(t, d, podConfig("flood-other", t.TempDir())).PodSandboxId
	if _, err := d.RT.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{}); err != nil {
		t.Fatal(err)
	}
	otherTook := time.Since(t2)
	t.Logf("during the flood: sibling create+start %v, its first log line %v, exec %v, another pod + ListContainers %v",
		startTook, lineTook, execTook, otherTook)
	bound := 15 * time.Second * timeoutScale
	for what, took := range map[string]time.Duration{"sibling start": startTook, "sibling log line": lineTook, "exec": execTook, "another pod": otherTook} {
		if took > bound {
			t.Errorf("%s took %v during the flood (bound %v)", what, took, bound)
		}
	}
	_ = other

	waitFor(t, 120*time.Second, "the flood to end (FLOOD-DONE in its log)", func() bool {
		return logHas(floodLog, "FLOOD-DONE")
	})
	close(stop)
	<-sampled
	mu.Lock()
	hwm := peak
	mu.Unlock()
	t.Logf("keeper resident memory: %d KiB before, peak %d KiB during the flood", baseRSS, hwm)
	// The keeper reads into one fixed buffer and carries at most one 16 KiB
	// partial line a stream; 8 MiB over its start is far above that.
	if hwm > baseRSS+8*1024 {
		t.Errorf("the keeper's peak resident memory grew from %d KiB to %d KiB under hostile output", baseRSS, hwm)
	}

	// Every line is "<time> <stream> <P|F> <content>" with content at most
	// 16 KiB.
	f, err := os.Open(floodLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	lines := 0
	for sc.Scan() {
		lines++
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) != 4 || (parts[1] != "stdout" && parts[1] != "stderr") || (parts[2] != "P" && parts[2] != "F") {
			t.Fatalf("log line %d is not a CRI log line: %.120q", lines, sc.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
			t.Fatalf("log line %d: bad timestamp %q", lines, parts[0])
		}
		if len(parts[3]) > 16384 {
			t.Fatalf("log line %d carries %d bytes, over the 16 KiB cut", lines, len(parts[3]))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read the flood's log after %d lines: %v", lines, err)
	}
	t.Logf("flood log: %d lines", lines)
	_ = flood
}

// logHas reports whether the file contains s, reading its last 1 MiB.
func logHas(path, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false
	}
	off := st.Size() - 1<<20
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return bytes.Contains(buf[:n], []byte(s))
}

// statusKB is a "kB" field of /proc/PID/status.
func statusKB(t *testing.T, pid int, key string) int64 {
	t.Helper()
	v := statusKBQuiet(pid, key)
	if v <= 0 {
		t.Fatalf("no %s for PID %d", key, pid)
	}
	return v
}

func statusKBQuiet(pid int, key string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}
