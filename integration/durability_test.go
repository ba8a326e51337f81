package integration

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/runner"
)

// runnerHolding reports whether a runner process of container id is alive
// (held at the runner-hold-start failpoint).
func runnerHolding(id string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 4 && args[1] == runner.Command && args[4] == id {
			return true
		}
	}
	return false
}

// TestSlowStartSiblingNeverBlocks: one container of a pod takes 30 s to
// start (its runner held at a test failpoint) while a sibling writes
// 100 MB to stdout. The pod's keeper must not block on the slow start:
// the sibling starts at once, writes all of it without blocking, its log
// is complete, and attach to it works, all before the slow start ends;
// the slow start then succeeds.
func TestSlowStartSiblingNeverBlocks(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.env = append(d.env, "PEAPOD_FAILPOINTS="+runner.HoldStartFailpoint)
	d.start()
	pullAll(t, d, image)
	logDir := t.TempDir()
	podCfg := podConfig("slowstart", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	c := ctx(t)

	release := filepath.Join(d.dir, "release-slow")
	// A held runner outlives its keeper: release it whatever happens
	// (runs before the daemon's cleanup).
	t.Cleanup(func() { os.WriteFile(release, nil, 0o644) })
	slowCfg := containerConfig("slow", image, "sleep", "1000")
	slowCfg.Annotations = map[string]string{runner.HoldStartAnnotation: release}
	slow, err := d.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: slowCfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	slowStarted := make(chan error, 1)
	slowBegin := time.Now()
	go func() {
		sc, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		_, err := d.rt.StartContainer(sc, &runtimeapi.StartContainerRequest{ContainerId: slow.ContainerId})
		slowStarted <- err
	}()
	waitFor(t, 20*time.Second, "the slow container's runner to hold", func() bool { return runnerHolding(slow.ContainerId) })

	// The sibling: 100 MB of 100-byte lines, a marker, then a tick every
	// 0.2 s for attach to see.
	line := strings.Repeat("0123456789", 10)[:99]
	const total = 100 << 20
	chattyCfg := containerConfig("chatty", image, "sh", "-c",
		"busybox yes "+line+" | head -c "+strconv.Itoa(total)+"; echo written; while :; do echo tick; sleep 0.2; done")
	chattyBegin := time.Now()
	sc, cancel := context.WithTimeout(c, 10*time.Second)
	chatty, err := d.rt.CreateContainer(sc, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: chattyCfg, SandboxConfig: podCfg})
	if err == nil {
		_, err = d.rt.StartContainer(sc, &runtimeapi.StartContainerRequest{ContainerId: chatty.ContainerId})
	}
	cancel()
	if err != nil {
		t.Fatalf("sibling start while another start is in flight: %v (after %v)", err, time.Since(chattyBegin))
	}
	logPath := filepath.Join(logDir, chattyCfg.LogPath)
	written := func() bool {
		f, err := os.Open(logPath)
		if err != nil {
			return false
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || st.Size() < total {
			return false
		}
		// The marker is followed by a tick line every 0.2 s.
		buf := make([]byte, 1<<20)
		n, _ := f.ReadAt(buf, st.Size()-min(st.Size(), int64(len(buf))))
		return strings.Contains(string(buf[:n]), " written\n")
	}
	for deadline := time.Now().Add(25 * time.Second * timeoutScale); !written(); time.Sleep(50 * time.Millisecond) {
		if time.Now().Before(deadline) {
			continue
		}
		b, _ := os.ReadFile(logPath)
		t.Fatalf("sibling log: %d bytes, ends %q", len(b), b[max(0, len(b)-300):])
	}
	t.Logf("sibling wrote 100 MB in %v while the slow start was in flight", time.Since(chattyBegin))

	// Attach to the sibling while the slow start is still in flight.
	att, err := d.rt.Attach(c, &runtimeapi.AttachRequest{ContainerId: chatty.ContainerId, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	actx, acancel := context.WithCancel(c)
	attached := make(chan error, 1)
	go func() {
		attached <- executor(t, att.Url).StreamWithContext(actx, remotecommand.StreamOptions{Stdout: out, Stderr: io.Discard})
	}()
	waitFor(t, 10*time.Second, "attach to the sibling to stream its ticks", func() bool { return strings.Contains(out.String(), "tick\n") })
	acancel()
	<-attached

	select {
	case err := <-slowStarted:
		t.Fatalf("the slow start ended before its release: %v", err)
	default:
	}
	// Its log is complete: every one of the 100 MB's lines, in order.
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	sc2 := bufio.NewScanner(f)
	sc2.Buffer(make([]byte, 64<<10), 64<<10)
	lines, bad := 0, 0
	for sc2.Scan() {
		fields := strings.SplitN(sc2.Text(), " ", 4)
		if len(fields) != 4 || fields[1] != "stdout" {
			bad++
			continue
		}
		if fields[3] == "written" {
			break
		}
		if fields[2] != "F" || fields[3] != line {
			bad++
			continue
		}
		lines++
	}
	f.Close()
	if want := total / 100; lines != want || bad != 0 {
		t.Errorf("sibling log: %d complete lines (want %d), %d bad", lines, want, bad)
	}

	// Held for 30 s in all, the slow start is released and succeeds.
	time.Sleep(time.Until(slowBegin.Add(30 * time.Second)))
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-slowStarted; err != nil {
		t.Fatalf("slow start: %v", err)
	}
	if took := time.Since(slowBegin); took < 30*time.Second {
		t.Errorf("slow start took %v, held for 30 s", took)
	}
	if st := containerStatus(t, d, slow.ContainerId).State; st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("slow container: %v, want running", st)
	}
	if st := containerStatus(t, d, chatty.ContainerId).State; st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("sibling: %v, want running", st)
	}
}
