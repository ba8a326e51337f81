package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestBadInput checks that each kind of bad request gets a clear gRPC code
// and leaves nothing behind: no container, mount, bundle or process.
func TestBadInput(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("bad", t.TempDir())
	run := runPod(t, d, podCfg)
	pod := run.PodSandboxId
	baseMounts := len(mountsUnder(d.Dir))
	const unknown = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

	check := func(what string, err error, code, inMessage string) {
		t.Helper()
		if got := grpcCode(err); got != code {
			t.Errorf("%s: code %s (%v), want %s", what, got, err, code)
			return
		}
		if inMessage != "" && !strings.Contains(err.Error(), inMessage) {
			t.Errorf("%s: message %q does not mention %q", what, err, inMessage)
		}
	}

	_, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: unknown})
	check("status of unknown container", err, "NotFound", unknown)
	_, err = d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: unknown})
	check("status of unknown pod", err, "NotFound", unknown)
	_, err = d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: unknown})
	check("start unknown container", err, "NotFound", unknown)
	_, err = d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: unknown, Cmd: []string{"true"}})
	check("exec in unknown container", err, "NotFound", unknown)
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: unknown, Config: containerConfig("x", image, "true"), SandboxConfig: podCfg})
	check("create in unknown pod", err, "NotFound", unknown)
	// Stop and remove are idempotent: unknown IDs are not errors (CRI).
	_, err = d.RT.StopContainer(c, &runtimeapi.StopContainerRequest{ContainerId: unknown})
	check("stop unknown container", err, "OK", "")
	_, err = d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: unknown})
	check("remove unknown pod", err, "OK", "")

	_, err = d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	check("duplicate pod name", err, "AlreadyExists", pod)
	if _, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("dup", image, "sleep", "100"), SandboxConfig: podCfg}); err != nil {
		t.Fatal(err)
	}
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("dup", image, "sleep", "100"), SandboxConfig: podCfg})
	check("duplicate container name", err, "AlreadyExists", "dup")

	missing := "registry.k8s.io/e2e-test-images/busybox:does-not-exist"
	_, err = d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: missing}})
	check("pull of a missing tag", err, "NotFound", missing)
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("noimage", missing, "true"), SandboxConfig: podCfg})
	check("create from an image not pulled", err, "NotFound", missing)

	_, err = d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}})
	check("pod without metadata", err, "InvalidArgument", "metadata")
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: image}}, SandboxConfig: podCfg})
	check("container without metadata", err, "InvalidArgument", "metadata")
	longName := podConfig("longhost", t.TempDir())
	longName.Hostname = strings.Repeat("h", 65)
	_, err = d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: longName})
	check("hostname over 64 characters", err, "InvalidArgument", "hostname")
	// A pod whose setup fails half-way (the pause cannot set a sysctl)
	// leaves nothing: its name can be used again at once.
	badSysctl := podConfig("sysctl", t.TempDir())
	badSysctl.Linux.Sysctls = map[string]string{"net.ipv4.no_such_key": "1"}
	_, err = d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: badSysctl})
	check("sysctl the kernel does not have", err, "InvalidArgument", "net.ipv4.no_such_key")
	badSysctl.Linux.Sysctls = nil
	retry, err := d.RT.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: badSysctl})
	if err != nil {
		t.Fatalf("pod name not released after a failed run: %v", err)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: retry.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	podDirs, _ := os.ReadDir(filepath.Join(d.State, "pods"))
	if len(podDirs) != 1 {
		t.Errorf("pod directories left: %d, want 1", len(podDirs))
	}
	noSource := containerConfig("nosource", image, "true")
	noSource.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: filepath.Join(t.TempDir(), "absent")}}
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: noSource, SandboxConfig: podCfg})
	check("mount source that does not exist", err, "InvalidArgument", "absent")
	badUser := containerConfig("baduser", image, "true")
	badUser.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "nosuchuser"}}
	_, err = d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: badUser, SandboxConfig: podCfg})
	check("user missing from the image", err, "InvalidArgument", "nosuchuser")

	// A command that does not exist fails at start, and the container
	// reports why.
	notFound, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("nocommand", image, "/no/such/binary"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: notFound.ContainerId})
	if err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Errorf("start of a missing binary: %v", err)
	}
	if s := containerStatus(t, d, notFound.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.Reason != "StartError" {
		t.Errorf("after failed start: state %v reason %q", s.State, s.Reason)
	}
	_, err = d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: notFound.ContainerId})
	check("start of an exited container", err, "FailedPrecondition", "")

	// Nothing of the failed requests is left: only the two containers that
	// were created, no extra mounts, no bundles of failed creates.
	cl, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{})
	if err != nil || len(cl.Containers) != 2 {
		t.Errorf("containers after bad requests: %v (err %v), want 2", cl, err)
	}
	if n := len(mountsUnder(d.Dir)); n != baseMounts+2 { // two rootfs mounts
		t.Errorf("mounts: %d, want %d: %v", n, baseMounts+2, mountsUnder(d.Dir))
	}
	bundles, _ := os.ReadDir(filepath.Join(d.State, "containers"))
	if len(bundles) != 2 {
		t.Errorf("bundles left: %d, want 2", len(bundles))
	}
	pods, _ := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if len(pods.GetItems()) != 1 {
		t.Errorf("pods after bad requests: %d, want 1", len(pods.GetItems()))
	}
}
