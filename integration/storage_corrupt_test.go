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

// storageRecord is one file containers/storage keeps its records in
// (go.podman.io/storage layers.go, images.go, containers.go): below the
// graph root in root/storage, or the run root in state/storage.
type storageRecord struct {
	inState bool   // below state/storage (the run root), else root/storage
	path    string // relative to that
	// decoded: a JSON record c/storage decodes at load (it refuses the
	// store when it cannot). The lock files hold an opaque last-writer
	// token, any content of which c/storage accepts.
	decoded bool
	// What survives the file's loss: a running container's root
	// filesystem (its storage container and every layer beneath it
	// recorded), the image (all its layers recorded).
	keepsRootfs, keepsImage bool
	// rwLayer: the path is peapod's record of the running container's
	// writable layer (image/rwlayer.go) with RUNNING for its ID, not a
	// containers/storage file: an unreadable one is not moved aside but
	// left out (said in the log) and its layer collected.
	rwLayer bool
}

var storageRecords = []storageRecord{
	{false, "overlay-layers/layers.json", true, false, false, false}, // image layers: under every container
	// Containers' layers are the driver's, recorded by peapod: c/storage's
	// container and volatile layer files hold only user-namespaced ones.
	{false, "overlay-layers/volatile-layers.json", true, true, true, false},
	{false, "overlay-images/images.json", true, true, false, false},
	{false, "overlay-containers/containers.json", true, true, true, false},
	{false, "overlay-containers/volatile-containers.json", true, true, true, false},
	{true, "overlay-layers/mountpoints.json", true, true, true, false},
	{false, "overlay-layers/layers.lock", false, true, true, false},
	{false, "overlay-images/images.lock", false, true, true, false},
	{false, "overlay-containers/containers.lock", false, true, true, false},
	{true, "overlay-layers/mountpoints.lock", false, true, true, false},
	{false, "storage.lock", false, true, true, false},
	{false, "peapod-rwlayers/RUNNING", true, false, true, true},
}

// TestCorruptStorageRecordsStartAnyway stops the daemon, damages one of
// containers/storage's own record files (each JSON record and each lock
// file; emptied, truncated, filled with garbage) and starts it again. It
// must start every time and say in its log which record it moved aside;
// the pod is listed; a running container whose root filesystem is still
// known keeps running, one whose record was lost is stopped (said in the
// log); the image is usable again or pulled again (as the kubelet does) and
// a created container and a new one start. Removing the pod then leaves no
// storage container, no container layer and no mount, and no layer
// directory no record names; removing the image at the end leaves no
// layer at all.
func TestCorruptStorageRecordsStartAnyway(t *testing.T) {
	d, image := readyDaemon(t)
	t.Cleanup(func() {
		if d.Cmd == nil {
			d.Start()
		}
	})
	graph, run := filepath.Join(d.Root, "storage"), filepath.Join(d.State, "storage")
	for _, rec := range storageRecords {
		modes := []string{"empty", "truncated", "garbage"}
		if rec.decoded && !rec.rwLayer {
			// The daemon killed instead of stopped: c/storage's mounts
			// (the created container's, the running one's) stay, and
			// the start repairs as after any unclean stop.
			modes = append(modes, "garbage-crash")
		}
		for _, mode := range modes {
			name := strings.NewReplacer("/", "-", "overlay-", "").Replace(rec.path) + "-" + mode
			t.Run(name, func(t *testing.T) {
				if d.Cmd == nil {
					d.Start()
				}
				vCfg := podConfig("v-"+strings.ReplaceAll(name, ".", "-"), t.TempDir())
				pod := runPod(t, d, vCfg).PodSandboxId
				// A failed check must not leave the pod to the next case.
				t.Cleanup(func() {
					if d.Cmd == nil {
						d.Start()
					}
					d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
				})
				running := startContainer(t, d, pod, vCfg, containerConfig("running", image, "sleep", "1000"))
				cr, err := d.RT.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
					Config: containerConfig("created", image, "sleep", "1000"), SandboxConfig: vCfg})
				if err != nil {
					t.Fatal(err)
				}
				created := cr.ContainerId
				if strings.HasSuffix(mode, "-crash") {
					d.Kill()
				} else {
					d.Stop()
				}

				path := filepath.Join(graph, strings.Replace(rec.path, "RUNNING", running, 1))
				if rec.inState {
					path = filepath.Join(run, rec.path)
				}
				if _, err := os.Stat(path); os.IsNotExist(err) && rec.decoded {
					// containers.json: c/storage writes it once it has a
					// container that is not volatile, which peapod never
					// makes (a store an older peapod used may have one).
					if err := os.WriteFile(path, []byte("[]"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				corruptFile(t, path, strings.TrimSuffix(mode, "-crash"))
				before, _ := os.ReadFile(d.LogPath)
				d.Start()
				after, _ := os.ReadFile(d.LogPath)
				newLog := string(after[len(before):])
				aside, _ := filepath.Glob(path + ".corrupt-*")
				if rec.rwLayer {
					if !strings.Contains(newLog, "unreadable record of a container's writable layer") || !strings.Contains(newLog, running) {
						t.Errorf("the daemon's log does not say the record of %s's layer was unreadable:\n%s", running, tail(newLog, 20))
					}
				} else if rec.decoded {
					if !strings.Contains(newLog, "containers/storage record cannot be read; moved aside") || !strings.Contains(newLog, path) {
						t.Errorf("the daemon's log does not say it moved %s aside:\n%s", path, tail(newLog, 20))
					}
					if len(aside) != 1 {
						t.Errorf("%s moved aside as %v, want one %s.corrupt-<time>", path, aside, path)
					}
				} else if len(aside) != 0 {
					t.Errorf("the lock file %s was moved aside (%v): its content is opaque to c/storage", path, aside)
				}
				for _, p := range aside {
					os.Remove(p)
				}

				pods, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
				if err != nil {
					t.Fatalf("list pods: %v", err)
				}
				if !slices.ContainsFunc(pods.Items, func(p *runtimeapi.PodSandbox) bool {
					return p.Id == pod && p.State == runtimeapi.PodSandboxState_SANDBOX_READY
				}) {
					t.Errorf("pods after the repair: %v, want pod %s listed and ready", pods.Items, pod)
				}
				// The corrupt file's records are lost only when it did not
				// decode: an empty lock file is as good as any.
				lost := rec.decoded
				switch st := containerStatus(t, d, running).State; {
				case st == runtimeapi.ContainerState_CONTAINER_RUNNING && (rec.keepsRootfs || !lost):
					if out, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: running, Cmd: []string{"cat", "/etc/hostname"}, Timeout: 30}); err != nil || out.ExitCode != 0 {
						t.Errorf("exec in the running container after the repair: %v %v", out, err)
					}
				case st == runtimeapi.ContainerState_CONTAINER_EXITED && !rec.keepsRootfs && lost:
					if !strings.Contains(newLog, "root filesystem is no longer recorded in containers/storage; stopped") || !strings.Contains(newLog, running) {
						t.Errorf("the running container exited, and the log does not say why:\n%s", tail(newLog, 20))
					}
					t.Logf("running container stopped: its root filesystem's records were lost")
				default:
					t.Errorf("running container: %v after the repair (its root filesystem's records should survive: %v)", st, rec.keepsRootfs || !lost)
				}
				// As the kubelet does: an image that is not there is pulled.
				is, err := d.Img.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
				if err != nil {
					t.Fatalf("image status: %v", err)
				}
				if (is.Image != nil) != (rec.keepsImage || !lost) {
					t.Errorf("image listed: %v, want %v", is.Image != nil, rec.keepsImage || !lost)
				}
				if is.Image == nil {
					t.Logf("image gone, pulled again")
					pullAll(t, d, image)
				}
				if _, err := d.RT.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: created}); err != nil {
					t.Errorf("start the created container after the repair: %v", err)
				}
				fresh := startContainer(t, d, pod, vCfg, containerConfig("fresh", image, "sleep", "1000"))
				if out, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: fresh, Cmd: []string{"cat", "/etc/hostname"}, Timeout: 30}); err != nil || out.ExitCode != 0 {
					t.Errorf("exec in a new container after the repair: %v %v", out, err)
				}

				if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
					t.Fatalf("remove the pod: %v", err)
				}
				if got := storageContainers(t, d.Root); len(got) != 0 {
					t.Errorf("storage containers left after the pod's removal: %v", got)
				}
				checkOnlyImageLayers(t, d.Root)
				if m := mountsUnder(filepath.Join(graph, "overlay")); slices.ContainsFunc(m, func(p string) bool { return strings.HasSuffix(p, "/merged") }) {
					t.Errorf("layers still mounted after the pod's removal: %v", m)
				}
			})
		}
	}
	if d.Cmd == nil {
		d.Start()
	}
	if _, err := d.Img.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	if l := storageLayerIDs(t, d.Root); len(l) != 0 {
		t.Errorf("layers left after removing every pod and the image: %v", l)
	}
	if dirs := overlayLayerDirs(t, d.Root); len(dirs) != 0 {
		t.Errorf("overlay layer directories left after removing every pod and the image: %v", dirs)
	}
}

// checkOnlyImageLayers: every recorded layer is one of an image's
// (no container layer), and every layer directory has a record.
func checkOnlyImageLayers(t *testing.T, root string) {
	t.Helper()
	layers := storageLayerIDs(t, root)
	parents := map[string]string{}
	for _, l := range readStorageJSON[struct {
		ID     string `json:"id"`
		Parent string `json:"parent"`
	}](t, root, "overlay-layers/layers.json", "overlay-layers/volatile-layers.json") {
		parents[l.ID] = l.Parent
	}
	used := map[string]bool{}
	for _, img := range readStorageJSON[struct {
		Layer string `json:"layer"`
	}](t, root, "overlay-images/images.json") {
		for id := img.Layer; id != "" && !used[id]; id = parents[id] {
			used[id] = true
		}
	}
	for _, id := range layers {
		if !used[id] {
			t.Errorf("layer %s is used by no image (a container's layer left?)", id)
		}
	}
	if dirs := overlayLayerDirs(t, root); !sameSet(dirs, layers) {
		t.Errorf("overlay layer directories %v, layer records %v", dirs, layers)
	}
}

func storageLayerIDs(t *testing.T, root string) []string {
	var ids []string
	for _, l := range readStorageJSON[struct {
		ID string `json:"id"`
	}](t, root, "overlay-layers/layers.json", "overlay-layers/volatile-layers.json") {
		ids = append(ids, l.ID)
	}
	return ids
}

func readStorageJSON[T any](t *testing.T, root string, files ...string) []T {
	t.Helper()
	var out []T
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, "storage", f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var recs []T
		if err := json.Unmarshal(b, &recs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, recs...)
	}
	return out
}

// overlayLayerDirs lists the overlay driver's layer directories (what its
// ListLayers returns: every directory but its link, staging and temporary
// ones).
func overlayLayerDirs(t *testing.T, root string) []string {
	ents, err := os.ReadDir(filepath.Join(root, "storage", "overlay"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		switch e.Name() {
		case "l", "staging", "tempdirs", "backingFsBlockDev", ".has-mount-program":
			continue
		}
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}
