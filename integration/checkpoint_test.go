package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCheckpointContainerReason: CheckpointContainer answers what is wrong
// with the request, then with the container, then with the node's CRIU,
// each with its own code, and leaves the container running. On a node
// whose criu cannot work (Debian 12's criu 3.17.1 on Linux 6.13+) the
// answer is FailedPrecondition with criu's own failing checks; a node
// whose `criu check` passes gets Unimplemented (no dump is built yet).
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
		if grpcCode(err) != "Unimplemented" {
			t.Errorf("criu check passes here: CheckpointContainer = %v, want Unimplemented (dump not built)", err)
		}
	}
	t.Logf("CheckpointContainer of a running container: %v", err)

	// Refused, so nothing written and nothing stopped.
	if _, statErr := os.Stat(location); !os.IsNotExist(statErr) {
		t.Errorf("refused checkpoint left %s: %v", location, statErr)
	}
	st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: counter})
	if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("after CheckpointContainer: status %v, %v; want running", st.GetStatus().GetState(), err)
	}
}
