package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapePodFilesFill: /etc/hostname and /etc/resolv.conf are the pod's
// files in the daemon's state directory (a tmpfs, /run/peapod, on most
// nodes), bound writable into every container, as containerd and CRI-O
// do. Whatever a container writes there is outside everything the kubelet
// measures (the writable layer, logs, emptyDirs) and, on tmpfs, host
// memory that outlives the container: a BestEffort container could fill
// /run, and with it the node's other runtimes' and systemd's state, with
// one dd. A write past a small bound must fail in the container, the host
// file stay within it, and the pod's other files still serve.
func TestEscapePodFilesFill(t *testing.T) {
	d, image := readyDaemon(t)
	podCfg := podConfig("podfill", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	filler := startContainer(t, d, pod, podCfg, containerConfig("filler", image, "sleep", "1000"))
	out, _ := execAll(t, d, filler, "sh", "-c",
		`for f in /etc/hostname /etc/resolv.conf; do
			dd if=/dev/zero of=$f bs=1M count=64 2>&1 | tail -1; echo "$f: $?"
		done
		dd if=/dev/zero of=/etc/hostname bs=1M count=8 oflag=append conv=notrunc 2>&1 | tail -1`)
	t.Logf("the container's writes: %s", strings.Join(strings.Fields(out), " "))
	podDir := filepath.Join(d.State, "pods", pod)
	var total int64
	for _, name := range []string{"hostname", "resolv.conf"} {
		st, err := os.Stat(filepath.Join(podDir, name))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
		t.Logf("host %s: %d bytes", name, st.Size())
	}
	if total > 1<<20 {
		t.Errorf("a container wrote %d MiB into the state directory through its pod files", total>>20)
	}
	// The pod's shm is unaffected and the pod still starts containers.
	sib := startContainer(t, d, pod, podCfg, containerConfig("sibling", image, "sleep", "1000"))
	if out, code := execAll(t, d, sib, "sh", "-c", "head -c 1 /dev/zero > /dev/shm/x && echo SHM-OK"); code != 0 || !strings.Contains(out, "SHM-OK") {
		t.Errorf("the pod's /dev/shm after the fill: %d %q", code, out)
	}
	_ = runtimeapi.ContainerState_CONTAINER_RUNNING
}
