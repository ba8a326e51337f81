package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCheckpointContainerReason: CheckpointContainer answers what is wrong
// with the request, then with the container, then with the node's CRIU,
// each with its own code, and leaves the container running. On a node
// whose criu cannot work (Debian 12's criu 3.17.1 on Linux 6.13+) the
// answer is FailedPrecondition with criu's own failing checks; a node
// whose `criu check` passes gets the archive (checkArchive).
func TestCheckpointContainerReason(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("ckpt", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	counter := startContainer(t, d, pod, podCfg, containerConfig("counter", image,
		"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"))
	created, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod, Config: containerConfig("idle", image, "sleep", "60"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}

	location := filepath.Join(t.TempDir(), "counter.tar")
	checkpoint := func(id, loc string) error {
		_, err := d.RT.CheckpointContainer(c, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: loc})
		return err
	}
	for _, tc := range []struct {
		what, id, loc, code, msg string
	}{
		{"relative location", counter, "counter.tar", "InvalidArgument", "not an absolute path"},
		{"unknown container", "no-such-container", location, "NotFound", "no-such-container"},
		{"created, not running", created.ContainerId, location, "FailedPrecondition", "not running"},
	} {
		if err := checkpoint(tc.id, tc.loc); grpcCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: CheckpointContainer = %v, want %s naming %q", tc.what, err, tc.code, tc.msg)
		}
	}

	// What this node's CRIU says, asked directly.
	err = checkpoint(counter, location)
	criu, lookErr := exec.LookPath("criu")
	switch {
	case lookErr != nil:
		if grpcCode(err) != "FailedPrecondition" || !strings.Contains(err.Error(), "criu not found in PATH") {
			t.Errorf("without criu: CheckpointContainer = %v, want FailedPrecondition naming the missing criu", err)
		}
	case exec.Command(criu, "check").Run() != nil:
		want := []string{"`criu check` failed", criu}
		if maps, _ := os.ReadFile("/proc/self/maps"); bytes.Contains(maps, []byte("[vvar_vclock]")) {
			if out, _ := exec.Command(criu, "check").CombinedOutput(); bytes.Contains(out, []byte("Unexpected rt vDSO area bounds")) {
				want = append(want, "vdso: Unexpected rt vDSO area bounds", "[vvar_vclock]")
			}
		}
		for _, w := range want {
			if grpcCode(err) != "FailedPrecondition" || !strings.Contains(err.Error(), w) {
				t.Errorf("criu check fails here: CheckpointContainer = %v, want FailedPrecondition naming %q", err, w)
			}
		}
	default:
		if err != nil {
			t.Fatalf("criu check passes here: CheckpointContainer = %v", err)
		}
		checkArchive(t, location)
	}
	t.Logf("CheckpointContainer of a running container: %v", err)
	if err != nil {
		// Refused, so nothing written.
		if _, statErr := os.Stat(location); !os.IsNotExist(statErr) {
			t.Errorf("refused checkpoint left %s: %v", location, statErr)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(location), ".*")); len(left) > 0 {
		t.Errorf("CheckpointContainer left work files beside the archive: %v", left)
	}

	// Left running, and still counting.
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: counter})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after CheckpointContainer: status %v, %v; want running", st.GetStatus().GetState(), err)
	}
	count := func() int {
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: counter, Cmd: []string{"cat", "/tmp/count"}, Timeout: 10})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("read the count: %v, %v", r, err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(r.Stdout)))
		return n
	}
	before := count()
	waitFor(t, 10*time.Second, "the counter to go on after the checkpoint", func() bool { return count() > before })
}

// checkArchive: the entries CRI-O and containerd write (checkpointctl's
// layout), CRIU's images among them, and the counter's file in the rootfs
// diff.
func checkArchive(t *testing.T, location string) {
	t.Helper()
	f, err := os.Open(location)
	if err != nil {
		t.Fatalf("no archive: %v", err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v, want 0600", fi.Mode().Perm())
	}
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		b, _ := io.ReadAll(tr)
		entries[hdr.Name] = b
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	t.Logf("archive entries: %v", names)
	for _, want := range []string{"config.dump", "spec.dump", "rootfs-diff.tar", "deleted.files", "checkpoint/inventory.img", "checkpoint/pstree.img", "checkpoint/descriptors.json"} {
		if _, ok := entries[want]; !ok {
			t.Errorf("archive lacks %s", want)
		}
	}
	var cfg struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(entries["config.dump"], &cfg); err != nil || cfg.Name != "counter" {
		t.Errorf("config.dump %s: %v, want name counter", entries["config.dump"], err)
	}
	diff := tar.NewReader(bytes.NewReader(entries["rootfs-diff.tar"]))
	found := false
	for {
		hdr, err := diff.Next()
		if err != nil {
			break
		}
		found = found || hdr.Name == "tmp/count"
	}
	if !found {
		t.Errorf("rootfs-diff.tar lacks tmp/count, the file the container writes")
	}
}
