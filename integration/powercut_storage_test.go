package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStorageRepairAfterUncleanStop: a daemon killed between creating a
// container's layer in containers/storage and saving its record leaves a
// storage container no record points to. After a power cut the bundle in
// the state dir (a tmpfs) that the crash reconcile would follow is gone
// too: the test removes it. The next start, finding no clean-stop marker,
// removes that storage container and its layer; a running container, a
// created one and the image stay usable. A clean stop then leaves the
// marker: the start after it repairs nothing.
func TestStorageRepairAfterUncleanStop(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("gc", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	running := startContainer(t, d, pod, podCfg, containerConfig("running", image, "sleep", "1000"))
	cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
		Config: containerConfig("created", image, "sleep", "1000"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	created := cr.ContainerId
	known := []string{running, created}
	if got := storageContainers(t, d.Root); !sameSet(got, known) {
		t.Fatalf("storage containers %v, want %v", got, known)
	}

	// Crash with the orphan's layer made and no record of it.
	d.Stop()
	d.Env = []string{"PEAPOD_FAILPOINTS=create-container-after-rootfs"}
	d.Start()
	if _, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
		Config: containerConfig("orphan", image, "sleep", "1000"), SandboxConfig: podCfg}); err == nil {
		t.Fatal("CreateContainer succeeded past the failpoint")
	}
	d.waitCrash()
	var orphan string
	for _, id := range storageContainers(t, d.Root) {
		if !slices.Contains(known, id) {
			orphan = id
		}
	}
	if orphan == "" {
		t.Fatalf("no storage container without a record after the crash: %v", storageContainers(t, d.Root))
	}
	orphanLayer := storageLayerOf(t, d.Root, orphan)
	// What a power cut also takes: the bundle on the state tmpfs.
	if err := os.RemoveAll(filepath.Join(d.State, "containers", orphan)); err != nil {
		t.Fatal(err)
	}

	d.Env = nil
	d.Start()
	if got := storageContainers(t, d.Root); !sameSet(got, known) {
		t.Errorf("storage containers after the unclean restart: %v, want %v (orphan %s)", got, known, orphan)
	}
	if _, err := os.Stat(filepath.Join(d.Root, "storage", "overlay", orphanLayer)); !os.IsNotExist(err) {
		t.Errorf("the orphan's layer directory overlay/%s is still there (%v)", orphanLayer, err)
	}
	for _, m := range mountsUnder(d.Root) {
		if strings.Contains(m, orphanLayer) {
			t.Errorf("the orphan's layer is still mounted at %s", m)
		}
	}
	if log, _ := os.ReadFile(d.LogPath); !strings.Contains(string(log), "removed a writable layer no container record points to") {
		t.Errorf("the daemon's log does not say it removed the orphan")
	}
	// The running container and its layer survive, the created one starts,
	// the image is intact.
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: running})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("running container after the repair: %v %v", st, err)
	}
	if out, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: running, Cmd: []string{"cat", "/etc/hostname"}, Timeout: 30}); err != nil || out.ExitCode != 0 {
		t.Errorf("exec in the running container after the repair: %v %v", out, err)
	}
	if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: created}); err != nil {
		t.Errorf("start the created container after the repair: %v", err)
	}
	if s, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil || s.Image == nil {
		t.Fatalf("image after the repair: %v %v", s, err)
	}
	startContainer(t, d, pod, podCfg, containerConfig("new", image, "sleep", "1000"))

	// A clean stop leaves the marker: no repair at the next start.
	d.Stop()
	before := strings.Count(readLog(t, d), "storage repair: containers/storage checked")
	d.Start()
	if after := strings.Count(readLog(t, d), "storage repair: containers/storage checked"); after != before {
		t.Errorf("storage repaired after a clean stop (%d repairs logged, %d before)", after, before)
	}
}

// storageContainers lists the containers whose writable layers are
// recorded: peapod's own records of the layers the driver made
// (image/rwlayer.go) and containers/storage's container records (both
// files: user-namespaced containers' are volatile).
func storageContainers(t *testing.T, root string) []string {
	var ids []string
	rw, err := os.ReadDir(filepath.Join(root, "storage", "peapod-rwlayers"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range rw {
		if len(e.Name()) == 64 {
			ids = append(ids, e.Name())
		}
	}
	for _, f := range []string{"containers.json", "volatile-containers.json"} {
		var recs []struct {
			ID string `json:"id"`
		}
		b, err := os.ReadFile(filepath.Join(root, "storage", "overlay-containers", f))
		if os.IsNotExist(err) || len(b) == 0 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &recs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

func storageLayerOf(t *testing.T, root, container string) string {
	// A layer the driver made is named after its container.
	if _, err := os.Stat(filepath.Join(root, "storage", "peapod-rwlayers", container)); err == nil {
		return container
	}
	for _, f := range []string{"containers.json", "volatile-containers.json"} {
		var recs []struct {
			ID    string `json:"id"`
			Layer string `json:"layer"`
		}
		b, _ := os.ReadFile(filepath.Join(root, "storage", "overlay-containers", f))
		json.Unmarshal(b, &recs)
		for _, r := range recs {
			if r.ID == container {
				return r.Layer
			}
		}
	}
	t.Fatalf("no storage record of container %s", container)
	return ""
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
