package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEscapeMountPropagation: a container's mounts must not be peers of
// the host's. A container that adds CAP_SYS_ADMIN (not privileged) mounts
// a tmpfs on its root and inside a hostPath volume with each propagation
// short of Bidirectional (None: rprivate, HostToContainer: rslave); none
// may appear on the host, no mount of the container may carry a shared
// peer group, and a mount the host makes in the volume afterwards reaches
// the container only with HostToContainer. Nothing of another pod made
// after the container started (its /dev/shm, its files' tmpfs, its root)
// may appear in the container.
func TestEscapeMountPropagation(t *testing.T) {
	d, image := readyDaemon(t)
	for _, prop := range []runtimeapi.MountPropagation{runtimeapi.MountPropagation_PROPAGATION_PRIVATE, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER} {
		t.Run(prop.String(), func(t *testing.T) {
			vol := t.TempDir()
			if err := os.MkdirAll(filepath.Join(vol, "later"), 0o755); err != nil {
				t.Fatal(err)
			}
			// A shared mount of its own, as the kubelet's directories
			// are on a node (HostToContainer needs one).
			if err := syscall.Mount(vol, vol, "", syscall.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unmount(vol) })
			if err := syscall.Mount("", vol, "", syscall.MS_SHARED, ""); err != nil {
				t.Fatal(err)
			}
			marker := "propmark" + randomSuffix()
			podCfg := podConfig("prop-"+strings.ToLower(prop.String()[12:]), t.TempDir())
			podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
			pod := runPod(t, d, podCfg).PodSandboxId
			cfg := capsContainer("mounter", image, podCfg, "SYS_ADMIN")
			cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, Propagation: prop}}
			id := startContainer(t, d, pod, podCfg, cfg)

			// Another pod, started after the container.
			otherCfg := podConfig("prop-other-"+strings.ToLower(prop.String()[12:]), t.TempDir())
			other := runPod(t, d, otherCfg).PodSandboxId
			startContainer(t, d, other, otherCfg, containerConfig("victim", image, "sleep", "1000"))

			out, code := execAll(t, d, id, "sh", "-c",
				"mkdir -p /mnt/a /vol/in && mount -t tmpfs "+marker+"-root /mnt/a && mount -t tmpfs "+marker+"-vol /vol/in && echo MOUNTED")
			if code != 0 || !strings.Contains(out, "MOUNTED") {
				t.Fatalf("the container could not mount (%d): %s", code, out)
			}
			// The host mounts into the volume after the container started.
			hostMnt := filepath.Join(vol, "later")
			if err := mountTmpfs(hostMnt, marker+"-host"); err != nil {
				t.Fatal(err)
			}
			defer unmount(hostMnt)
			time.Sleep(200 * time.Millisecond)

			host, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(host), marker+"-root") || strings.Contains(string(host), marker+"-vol") {
				t.Errorf("a container's mount propagated to the host: %s", grepLines(string(host), marker))
			}
			info, _ := execAll(t, d, id, "cat", "/proc/self/mountinfo")
			for _, line := range strings.Split(info, "\n") {
				if f := strings.Fields(line); len(f) > 6 {
					for _, opt := range f[6:] {
						if opt == "-" {
							break
						}
						if strings.HasPrefix(opt, "shared:") {
							t.Errorf("a mount of the container is a peer of others (%s): %s", opt, line)
						}
					}
				}
				if strings.Contains(line, other) {
					t.Errorf("a mount of a pod started later is in the container: %s", line)
				}
			}
			sawHost := strings.Contains(info, marker+"-host")
			t.Logf("%s: the host's later mount in the volume seen by the container: %v", prop, sawHost)
			if want := prop == runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER; sawHost != want {
				t.Errorf("%s: the host's later mount reached the container: %v, want %v", prop, sawHost, want)
			}
			for _, p := range []string{pod, other} {
				d.RT.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: p})
				if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// mountTmpfs mounts a small tmpfs named source at dir on the host.
func mountTmpfs(dir, source string) error {
	return syscall.Mount(source, dir, "tmpfs", 0, "size=64k")
}

func unmount(dir string) { syscall.Unmount(dir, syscall.MNT_DETACH) }
