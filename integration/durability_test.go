package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	d.Env = append(d.Env, "PEAPOD_FAILPOINTS="+runner.HoldStartFailpoint)
	d.Start()
	pullAll(t, d, image)
	logDir := t.TempDir()
	podCfg := podConfig("slowstart", logDir)
	pod := runPod(t, d, podCfg).PodSandboxId
	c := ctx(t)

	release := filepath.Join(d.Dir, "release-slow")
	// A held runner outlives its keeper: release it whatever happens
	// (runs before the daemon's cleanup).
	t.Cleanup(func() { os.WriteFile(release, nil, 0o644) })
	slowCfg := containerConfig("slow", image, "sleep", "1000")
	slowCfg.Annotations = map[string]string{runner.HoldStartAnnotation: release}
	slow, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: slowCfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	slowStarted := make(chan error, 1)
	slowBegin := time.Now()
	go func() {
		sc, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		_, err := d.RT.StartContainer(sc, &runtimeapi.StartContainerRequest{ContainerId: slow.ContainerId})
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
	chatty, err := d.RT.CreateContainer(sc, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: chattyCfg, SandboxConfig: podCfg})
	if err == nil {
		_, err = d.RT.StartContainer(sc, &runtimeapi.StartContainerRequest{ContainerId: chatty.ContainerId})
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
	att, err := d.RT.Attach(c, &runtimeapi.AttachRequest{ContainerId: chatty.ContainerId, Stdout: true, Stderr: true})
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

// corruptFile empties, truncates (keeps the first half) or fills path
// with garbage of the same size, as a power cut or a bad disk leaves it.
func corruptFile(t *testing.T, path, mode string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s to corrupt it: %v", path, err)
	}
	if err := os.WriteFile(path, corruptBytes(data, mode), 0o600); err != nil {
		t.Fatal(err)
	}
}

func corruptBytes(data []byte, mode string) []byte {
	switch mode {
	case "empty":
		return []byte{}
	case "truncated":
		return append([]byte(nil), data[:len(data)/2]...)
	default: // garbage
		g := make([]byte, max(len(data), 64))
		rand.Read(g)
		return g
	}
}

// corruptPodRecord rewrites the pod's record inside the (closed) bbolt
// metadata file, as a torn write would leave it.
func corruptPodRecord(t *testing.T, d *daemon, pod, mode string) {
	t.Helper()
	corruptRecord(t, d, "pods", pod, mode)
}

// corruptRecord rewrites record id of bucket inside the (closed) bbolt
// metadata file.
func corruptRecord(t *testing.T, d *daemon, bucket, id, mode string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(d.Root, "metadata.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		data := b.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("no record %s in bucket %s", id, bucket)
		}
		return b.Put([]byte(id), corruptBytes(data, mode))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCorruptStateStartsAnyway stops the daemon, damages one state file of
// a victim pod (IPAM record, metadata record, bundle config.json, keeper
// socket; emptied, truncated, garbage), and starts it again: it must
// start every time, log what it moved aside, and keep managing the pods
// it can (a steady pod stays listed and ready with its container
// running); the victim is listed or cleanly gone, and can be removed.
// containers/storage's records: TestCorruptStorageRecordsStartAnyway; the
// keeper socket directory: TestKeeperSocketRestored.
func TestCorruptStateStartsAnyway(t *testing.T) {
	d, image := readyDaemon(t)
	// A failure while the daemon is stopped: start it again, so that its
	// cleanup (registered earlier, run later) can remove the pods.
	t.Cleanup(func() {
		if d.Cmd == nil {
			d.Start()
		}
	})
	steadyCfg := podConfig("steady", t.TempDir())
	steady := runPod(t, d, steadyCfg).PodSandboxId
	steadyCtr := startContainer(t, d, steady, steadyCfg, containerConfig("c", image, "sleep", "1000"))

	kinds := []struct {
		name   string
		moved  string // what the log says about the damaged file
		damage func(t *testing.T, pod, ctr, mode string)
	}{
		{"ipam", "IPAM record unreadable, moved aside", func(t *testing.T, pod, ctr, mode string) {
			corruptFile(t, filepath.Join(d.Root, "network", "ipam-"+d.Bridge, pod), mode)
		}},
		{"metadata", "metadata record cannot be used; moved aside", func(t *testing.T, pod, ctr, mode string) {
			corruptPodRecord(t, d, pod, mode)
		}},
		{"container-record", "metadata record cannot be used; moved aside", func(t *testing.T, pod, ctr, mode string) {
			corruptRecord(t, d, "containers", ctr, mode)
		}},
		{"bundle", "OCI spec cannot be used; moved aside", func(t *testing.T, pod, ctr, mode string) {
			corruptFile(t, filepath.Join(d.State, "containers", ctr, "config.json"), mode)
		}},
		{"keeper-socket", "a keeper's socket was gone or replaced; the keeper bound it again", func(t *testing.T, pod, ctr, mode string) {
			p := filepath.Join(d.State, "k", pod[:32])
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, corruptBytes([]byte("0123456789abcdef0123456789abcdef"), mode), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	victims := 0
	for _, kind := range kinds {
		for _, mode := range []string{"empty", "truncated", "garbage"} {
			name := kind.name + "-" + mode
			vCfg := podConfig("v-"+name, t.TempDir())
			victim := runPod(t, d, vCfg).PodSandboxId
			// A sleep of its own length, to find its process afterwards.
			victims++
			vSleep := strconv.Itoa(50000 + victims)
			vCtr := startContainer(t, d, victim, vCfg, containerConfig("c", image, "sleep", vSleep))
			// (The init has execed sleep shortly after the start returns.)
			waitFor(t, 10*time.Second, name+": the victim's container process", func() bool { return findCmdline("sleep\x00"+vSleep+"\x00") > 0 })
			d.Stop()
			kind.damage(t, victim, vCtr, mode)
			before, _ := os.ReadFile(d.LogPath)
			d.Start()
			after, _ := os.ReadFile(d.LogPath)
			newLog := string(after[len(before):])
			if kind.moved != "" && !strings.Contains(newLog, kind.moved) {
				t.Errorf("%s: the daemon's log does not say %q:\n%s", name, kind.moved, tail(newLog, 20))
			}
			pods, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
			if err != nil {
				t.Fatalf("%s: list pods: %v", name, err)
			}
			states := map[string]runtimeapi.PodSandboxState{}
			for _, p := range pods.Items {
				states[p.Id] = p.State
			}
			if states[steady] != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("%s: steady pod %v, want ready", name, states[steady])
			}
			if st := containerStatus(t, d, steadyCtr).State; st != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("%s: steady container %v, want running", name, st)
			}
			// As the kubelet does: an image that is not there is pulled.
			is, err := d.Img.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
			if err != nil {
				t.Fatalf("%s: image status: %v", name, err)
			}
			if is.Image == nil {
				t.Logf("%s: image gone, pulled again", name)
				pullAll(t, d, image)
			}
			_, listed := states[victim]
			if listed {
				t.Logf("%s: victim pod listed, %v", name, states[victim])
			} else {
				t.Logf("%s: victim pod cleanly gone", name)
			}
			if listed {
				if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: victim}); err != nil {
					t.Errorf("%s: remove the victim pod: %v", name, err)
				}
			}
			if pid := findPause(victim); pid > 0 {
				t.Errorf("%s: the victim's pause %d is still running", name, pid)
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				pid := findCmdline("sleep\x00" + vSleep + "\x00")
				if pid == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s: the victim's container process %d is still running", name, pid)
					break
				}
			}
		}
	}
}

// findPause returns the PID of a pause process serving pod (0: none).
func findPause(pod string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "pod-pause") && strings.Contains(string(b), pod[:32]) {
			return pid
		}
	}
	return 0
}

// findCmdline returns the PID of a process whose command line (NUL
// separated) contains s (0: none).
func findCmdline(s string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), s) {
			return pid
		}
	}
	return 0
}

// networkReady returns the NetworkReady condition's status and reason.
func networkReady(t *testing.T, d *daemon) (bool, string) {
	t.Helper()
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		if c.Type == runtimeapi.NetworkReady {
			return c.Status, c.Reason + ": " + c.Message
		}
	}
	t.Fatal("no NetworkReady condition")
	return false, ""
}

// TestDegradedNetworkHostPortLeak: after a pod_cidr change the bridge's
// address no longer matches and the network is not ready. Stopping and
// removing a pod then must remove its hostPort mapping too, not only free
// its IP (the mapping went to whichever pod got the IP next). And a
// pod_cidr that overlaps a host network must not stop the daemon: it
// starts, keeps its pods managed and says why the network is not ready.
func TestDegradedNetworkHostPortLeak(t *testing.T) {
	d, _ := readyDaemon(t)
	hostPort := freeTCPPort(t)
	cfg := podConfig("ports", t.TempDir())
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(hostPort)}}
	pod := runPod(t, d, cfg).PodSandboxId
	table := func() string {
		out, _ := exec.Command("nft", "list", "table", "ip", "peapod-"+d.Bridge).CombinedOutput()
		return string(out)
	}
	if !strings.Contains(table(), strconv.Itoa(hostPort)) {
		t.Fatalf("host port %d not mapped:\n%s", hostPort, table())
	}

	d.Stop()
	d.PodCIDR = freePodCIDR(t) // the bridge keeps the old address
	d.Start()
	if ready, why := networkReady(t, d); ready {
		t.Fatal("network ready after a pod_cidr change with the bridge's old address")
	} else {
		t.Logf("not ready: %s", why)
	}
	if _, err := d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if tb := table(); strings.Contains(tb, strconv.Itoa(hostPort)) {
		t.Errorf("host port %d still mapped after the pod was removed with the network not ready:\n%s", hostPort, tb)
	}

	// A pod_cidr overlapping a host network (a bridge of the test's own):
	// the daemon starts, the network is not ready and says why.
	dummy := "pptd" + randomSuffix()
	overlap := freePodCIDR(t)
	if out, err := exec.Command("ip", "link", "add", dummy, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", dummy).Run() })
	for _, args := range [][]string{{"addr", "add", strings.TrimSuffix(overlap, "0/24") + "1/24", "dev", dummy}, {"link", "set", dummy, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	d.Stop()
	d.PodCIDR = overlap
	d.Start()
	if ready, why := networkReady(t, d); ready || !strings.Contains(why, "overlaps") {
		t.Errorf("pod_cidr overlapping %s: ready=%v %q, want not ready naming the overlap", dummy, ready, why)
	}
}

// TestRemovePodReportsRemovalFailure: when the files of a removed
// container cannot be deleted (here its bundle's spec made immutable; the
// same path as a root filesystem that will not go), RemovePodSandbox must
// fail and keep the pod, not report success with them left; once the
// cause is gone, the retried removal succeeds and nothing is left.
func TestRemovePodReportsRemovalFailure(t *testing.T) {
	d, image := readyDaemon(t)
	cfg := podConfig("stuck-removal", t.TempDir())
	pod := runPod(t, d, cfg).PodSandboxId
	ctr := startContainer(t, d, pod, cfg, containerConfig("c", image, "sleep", "1000"))
	pinned := filepath.Join(d.State, "containers", ctr, "config.json")
	if out, err := exec.Command("chattr", "+i", pinned).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", pinned).Run() })

	_, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
	if err == nil {
		t.Fatal("RemovePodSandbox succeeded although its container's files could not be deleted")
	}
	t.Logf("RemovePodSandbox: %v", err)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), ctr) {
		t.Errorf("RemovePodSandbox's error: code %v, want Internal with a message naming container %s", status.Code(err), ctr)
	}
	pods, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Id != pod {
		t.Errorf("pods after the failed removal: %v, want the pod still listed", pods.Items)
	}

	if out, err := exec.Command("chattr", "-i", pinned).CombinedOutput(); err != nil {
		t.Fatalf("chattr -i: %v: %s", err, out)
	}
	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatalf("retried RemovePodSandbox: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(pinned)); err == nil {
		t.Errorf("the container's bundle %s is still there", filepath.Dir(pinned))
	}
}

// TestWedgedPauseFailsRunPod: a pause that never reports (held at a
// test-only failpoint) must not hang RunPodSandbox with the pod's name
// reserved: the call fails at the deadline, nothing of the pod is left,
// and the name is free again (a second try is not refused as a duplicate;
// it meets the same deadline).
func TestWedgedPauseFailsRunPod(t *testing.T) {
	regAddr, _ := testImage(t)
	d := newDaemon(t, regAddr)
	d.Env = append(d.Env, "PEAPOD_FAILPOINTS=pause-hang-before-ready")
	d.Start()
	cfg := podConfig("wedged", t.TempDir())
	for try := 1; try <= 2; try++ {
		begin := time.Now()
		c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		_, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "did not report within") {
			t.Fatalf("try %d: RunPodSandbox with a wedged pause: %v (after %v)", try, err, time.Since(begin))
		}
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("try %d: RunPodSandbox with a wedged pause: code %v, want DeadlineExceeded", try, status.Code(err))
		}
		t.Logf("try %d: failed after %v: %v", try, time.Since(begin), err)
		pods, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != 0 {
			t.Errorf("try %d: pods listed after the failure: %v", try, pods.Items)
		}
		if left := keepersUnder(d.State); len(left) > 0 {
			t.Errorf("try %d: pause processes left: %v", try, left)
		}
	}
}

// keepersUnder lists the pause processes whose socket is under state.
func keepersUnder(state string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "pod-pause") && strings.Contains(string(b), state) {
			out = append(out, pid)
		}
	}
	return out
}
