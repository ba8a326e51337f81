package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestKubeletCheckpoint: kubectl-style checkpointing through the stock
// kubelet's checkpoint API (KEP-2008; the ContainerCheckpoint gate is on
// by default since 1.30): POST /checkpoint/{namespace}/{pod}/{container}
// on its authenticated port (anonymous with AlwaysAllow in the test's
// kubelet config) makes peapod write the archive into the kubelet's
// checkpoints directory, with the entries checkpointctl reads; the archive
// then restores through CRI, in the same pod, and counts on.
// Needs PEAPOD_KUBELET and a node where CRIU works:
// integration/checkpoint-guest.sh runs it in the qemu guest with
// CKPT_KUBELET set.
func TestKubeletCheckpoint(t *testing.T) {
	bin := os.Getenv("PEAPOD_KUBELET")
	if bin == "" {
		t.Skip("PEAPOD_KUBELET is not set")
	}
	if !criuWorks() {
		t.Skip("criu check fails on this node; integration/checkpoint-guest.sh runs this test where it passes")
	}
	reg := testenv.StartRegistry(t)
	testenv.PushImage(t, reg, "e2e-kubelet/busybox:1", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	cgRoot := makeCgroupRoot(t)
	var podLogs string
	hostPaths(t, func() string { return podLogs })
	d := newNodeDaemon(t, reg)
	d.Start()
	k := startKubelet(t, bin, d.Socket, cgRoot)
	podLogs = k.podLogs

	k.apply(t, newPod("ckpt", sh("counter", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo tick $i; sleep 0.2; done")))
	k.waitPod(t, "ckpt", podTimeout, "counter running", func(p *corev1.Pod) bool { return running(p, "counter") })
	c := ctx(t)
	count := func(id string) int {
		t.Helper()
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", "/tmp/count"}, Timeout: 10})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("read the count of %s: %v, %v", id, r, err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(r.Stdout)))
		return n
	}
	var counter, sandbox string
	var labels, annotations map[string]string
	for _, sb := range sandboxesOf(t, d.RT, "ckpt") {
		for _, ctr := range containersOf(t, d.RT, sb.Id) {
			if ctr.State == runtimeapi.ContainerState_CONTAINER_RUNNING && ctr.Metadata.Name == "counter" {
				counter, sandbox, labels, annotations = ctr.Id, sb.Id, ctr.Labels, ctr.Annotations
			}
		}
	}
	if counter == "" {
		t.Fatal("no running counter container in the runtime")
	}
	waitFor(t, 30*time.Second, "the counter to reach 10", func() bool { return count(counter) >= 10 })

	before := count(counter)
	t0 := time.Now()
	u := k.base + "/checkpoint/" + e2eNamespace + "/" + fullName("ckpt") + "/counter"
	resp, err := k.http.Post(u, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(t0)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s: %s\n%s", u, resp.Status, body, k.logTail(20))
	}
	after := count(counter)
	var items struct{ Items []string }
	if err := json.Unmarshal(body, &items); err != nil || len(items.Items) != 1 {
		t.Fatalf("checkpoint API answered %s (%v), want one archive", body, err)
	}
	archive := items.Items[0]
	if dir := filepath.Join(k.rootDir, "checkpoints"); filepath.Dir(archive) != dir {
		t.Errorf("archive %s, want it in the kubelet's checkpoints directory %s", archive, dir)
	}
	t.Logf("POST /checkpoint took %s: %s", took, archive)
	checkArchive(t, archive)

	// Restore through CRI into the same pod, beside the original (which the
	// dump left running), with the kubelet's labels of its pod: the kubelet
	// stops a running pod or container it cannot place (a pod of the
	// test's own, a container without io.kubernetes.pod.uid), while a
	// container of a pod it knows that its spec does not name is left alone.
	cfg := containerConfig("counter-restored", archive)
	cfg.Command = nil
	cfg.Labels, cfg.Annotations = map[string]string{}, annotations
	for k, v := range labels {
		cfg.Labels[k] = v
	}
	cfg.Labels["io.kubernetes.container.name"] = "counter-restored"
	// The mounts the kubelet gave the original (its /etc/hosts and
	// termination log): CRIU restores each, and peapod takes no host
	// path from the archive.
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: counter})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mounts = st.Status.Mounts
	created, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: sandbox, Config: cfg})
	if err != nil {
		t.Fatalf("CreateContainer from the kubelet's archive: %v", err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		t.Fatalf("StartContainer (restore): %v", err)
	}
	first := count(created.ContainerId)
	if first < before || first > after+2 {
		t.Errorf("restored counter at %d; the kubelet's checkpoint was taken between %d and %d", first, before, after)
	}
	waitFor(t, 20*time.Second, "the restored counter to go on", func() bool { return count(created.ContainerId) > first+2 })
	t.Logf("checkpointed between %d and %d; restored counter read %d and went on", before, after, first)
	// The original goes on under the kubelet (the dump left it running).
	waitFor(t, 20*time.Second, "the kubelet's counter to go on", func() bool { return count(counter) > after })
}
