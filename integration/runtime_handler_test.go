package integration

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A handler listed in runtime_handlers (what the node e2e suite's
// RuntimeClass specs ask for as "test-handler") is reported in Status and
// runs pods, which report their handler; an unlisted one is NotFound.
func TestRuntimeHandlers(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	conf := filepath.Join(d.Dir, "peapod.toml")
	if err := os.WriteFile(conf, []byte("[runtime_handlers.test-handler]\nruntime = \"embedded\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Args = append(d.Args, "--config", conf)
	d.Start()
	c := ctx(t)

	st, err := d.RT.Status(c, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
		if !h.GetFeatures().GetRecursiveReadOnlyMounts() {
			t.Errorf("handler %q: RecursiveReadOnlyMounts not reported", h.Name)
		}
	}
	if len(names) != 2 || names[0] != "" || names[1] != "test-handler" {
		t.Fatalf("Status runtime handlers = %q, want [\"\" \"test-handler\"]", names)
	}

	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	cfg := podConfig("handler", t.TempDir())
	run, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "test-handler"})
	if err != nil {
		t.Fatalf("run pod with test-handler: %v", err)
	}
	ps, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: run.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Status.RuntimeHandler != "test-handler" || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod status: handler %q state %v, want test-handler, ready", ps.Status.RuntimeHandler, ps.Status.State)
	}
	id := startContainer(t, d, run.PodSandboxId, cfg, containerConfig("c", image, "sleep", "60"))
	cs, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container in the test-handler pod: %v, %v", cs.GetStatus().GetState(), err)
	}

	_, err = d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podConfig("other", t.TempDir()), RuntimeHandler: "other-handler"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unlisted handler: got %v, want NotFound", err)
	}
	for _, id := range []string{run.PodSandboxId} {
		d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("remove pod: %v", err)
		}
	}
}
