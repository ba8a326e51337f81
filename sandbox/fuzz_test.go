package sandbox

import (
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/hostfs"
	"github.com/peapod-cri/peapod/sandbox/runner"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	securejoin "github.com/cyphar/filepath-securejoin"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fuzzRootfs is a container root with an /etc/passwd and symlinks that
// point out of it, as a hostile image would ship.
func fuzzRootfs(f *testing.F) string {
	root := f.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\nwheel:x:10:nobody\n"), 0o644)
	for link, target := range map[string]string{"shadow": "/etc/shadow", "up": "../../../../..", "host": "/", "loop": "loop"} {
		os.Symlink(target, filepath.Join(root, link))
	}
	return root
}

// FuzzBuildSpec feeds arbitrary container configs (protobuf wire bytes, as
// the kubelet sends them) to the request-to-OCI translation. It must never
// panic, and what it builds must keep its promises: capabilities from the
// daemon's bounding set only, the device cgroup closed unless privileged,
// the requested user, and a spec libcontainer can take or refuse.
func FuzzBuildSpec(f *testing.F) {
	rootfs := fuzzRootfs(f)
	podDir := f.TempDir()
	for _, name := range []string{"hostname", "resolv.conf"} {
		os.WriteFile(filepath.Join(podDir, name), nil, 0o644)
	}
	pod := &Pod{
		ID: strings.Repeat("a", 64), PausePID: os.Getpid(), PIDHolder: os.Getpid(), Dir: podDir, Cgroup: "peapod-fuzz/pod",
		Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "n", Uid: "u"},
			Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}}},
	}
	for _, cfg := range fuzzSeeds() {
		data, err := proto.Marshal(cfg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	host := oci.HostFacts()
	bounding := host.Bounding
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := &runtimeapi.ContainerConfig{}
		if err := proto.Unmarshal(data, cfg); err != nil {
			return
		}
		for _, d := range cfg.GetDevices() {
			// Whole-/dev walks are slow, not wrong; keep the fuzzer fast.
			if d != nil && filepath.Clean(d.GetHostPath()) == "/dev" {
				return
			}
		}
		spec, err := oci.Build(oci.Input{ID: strings.Repeat("b", 64), Pod: specPod(pod), Config: cfg, Image: Image{ID: "img", Cmd: []string{"sh"}}, Rootfs: rootfs, CgroupParent: "peapod-fuzz"}, host)
		if err != nil {
			return
		}
		sec := cfg.GetLinux().GetSecurityContext()
		for _, c := range spec.Process.Capabilities.Bounding {
			if !slices.Contains(bounding, c) {
				t.Fatalf("capability %s is outside the daemon's bounding set", c)
			}
		}
		if !sec.GetPrivileged() {
			for _, r := range spec.Linux.Resources.Devices {
				if r.Allow && r.Major == nil && r.Minor == nil && (r.Type == "" || r.Type == "a") {
					t.Fatalf("unprivileged container may use every device: %+v", r)
				}
			}
			if sec.GetMaskedPaths() == nil && len(spec.Linux.MaskedPaths) == 0 {
				t.Fatalf("unprivileged container without masked paths")
			}
		}
		if u := sec.GetRunAsUser(); u != nil && int64(spec.Process.User.UID) != u.GetValue() {
			t.Fatalf("run_as_user %d became uid %d", u.GetValue(), spec.Process.User.UID)
		}
		if spec.Root.Path != rootfs {
			t.Fatalf("root %q, want %q", spec.Root.Path, rootfs)
		}
		runner.LibcontainerConfig(strings.Repeat("b", 64), spec) // must not panic
	})
}

func fuzzSeeds() []*runtimeapi.ContainerConfig {
	return []*runtimeapi.ContainerConfig{
		{Metadata: &runtimeapi.ContainerMetadata{Name: "a"}, Image: &runtimeapi.ImageSpec{Image: "busybox"}, Command: []string{"sh"}},
		{
			Metadata: &runtimeapi.ContainerMetadata{Name: "b"}, Command: []string{"sleep", "1"}, WorkingDir: "/up/etc",
			Envs:   []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}},
			Mounts: []*runtimeapi.Mount{{ContainerPath: "/shadow", HostPath: "/tmp", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}},
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 26, OomScoreAdj: 500},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					RunAsUser: &runtimeapi.Int64Value{Value: 65534}, SupplementalGroups: []int64{10},
					Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"NET_RAW"}, AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}},
					NoNewPrivs:   true, ReadonlyRootfs: true, MaskedPaths: []string{"/proc/kcore"},
					Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				},
			},
		},
		{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"x"},
			Devices: []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: "rw"}},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Privileged: true, RunAsUsername: "nobody",
				Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "x"},
			}},
		},
	}
}

// FuzzPathResolution: whatever a request names and whatever the image's
// symlinks point at, a log path stays in its log directory and a mount
// destination resolves inside the container's root.
func FuzzPathResolution(f *testing.F) {
	root := fuzzRootfs(f)
	logDir := filepath.Join(root, "logs")
	os.MkdirAll(logDir, 0o755)
	os.Symlink("/etc/shadow", filepath.Join(logDir, "shadow.log"))
	os.Symlink("../../../..", filepath.Join(logDir, "up"))
	for _, seed := range []string{"c/0.log", "shadow.log", "up/etc/shadow", "../x", "/etc/shadow", "a/./b//c", "up/up/up/shadow", "host/etc/passwd", "loop/x", "..", ".", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if lp, err := hostfs.ContainerLogPath(logDir, p); err == nil && lp != "" {
			if !strings.HasPrefix(lp, logDir+"/") && lp != logDir {
				t.Fatalf("log path %q resolved to %q, outside %s", p, lp, logDir)
			}
		}
		dest, err := securejoin.SecureJoin(root, "/"+p)
		if err == nil && !strings.HasPrefix(dest, root+"/") && dest != root {
			t.Fatalf("mount destination %q resolved to %q, outside the root", p, dest)
		}
	})
}
