package oci

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestAppArmorProfile(t *testing.T) {
	dir := t.TempDir()
	aa := hostAppArmor{enabledFile: filepath.Join(dir, "enabled"), profilesFile: filepath.Join(dir, "profiles"), parser: "false"}
	local := func(ref string) *runtimeapi.LinuxContainerSecurityContext {
		return &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}}
	}
	rd := &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}

	// No AppArmor in the kernel: RuntimeDefault is skipped, Localhost refused.
	for _, sec := range []*runtimeapi.LinuxContainerSecurityContext{nil, rd, {Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}} {
		if p, err := apparmorProfile(sec, aa); p != "" || err != nil {
			t.Errorf("no AppArmor, %v: %q, %v; want none", sec.GetApparmor(), p, err)
		}
	}
	if _, err := apparmorProfile(local("mine"), aa); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "not enabled") {
		t.Errorf("no AppArmor, Localhost: %v, want InvalidArgument saying it is not enabled", err)
	}

	// AppArmor on: a Localhost profile must be loaded.
	os.WriteFile(aa.enabledFile, []byte("Y\n"), 0o644)
	os.WriteFile(aa.profilesFile, []byte("mine (enforce)\n"+defaultAppArmorProfile+" (enforce)\n"), 0o644)
	if p, err := apparmorProfile(local("localhost/mine"), aa); p != "mine" || err != nil {
		t.Errorf("loaded Localhost: %q, %v", p, err)
	}
	if _, err := apparmorProfile(local("other"), aa); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "not loaded") {
		t.Errorf("unloaded Localhost: %v", err)
	}
	if p, err := apparmorProfile(rd, aa); p != defaultAppArmorProfile || err != nil {
		t.Errorf("RuntimeDefault: %q, %v", p, err)
	}
	if p, _ := apparmorProfile(&runtimeapi.LinuxContainerSecurityContext{Privileged: true}, aa); p != "" {
		t.Errorf("privileged without a profile: %q, want none", p)
	}

	// The deprecated string field, when the structured one is absent (older
	// kubelets, critest's "deprecated apparmor_profile field" specs).
	for old, want := range map[string]string{"localhost/mine": "mine", "runtime/default": defaultAppArmorProfile, "unconfined": ""} {
		if p, err := apparmorProfile(&runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: old}, aa); p != want || err != nil {
			t.Errorf("deprecated %q: %q, %v; want %q", old, p, err, want)
		}
	}
	for _, bad := range []string{"localhost/other", "docker-default"} {
		if _, err := apparmorProfile(&runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: bad}, aa); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("deprecated %q (unloaded, or no such form): %v, want InvalidArgument", bad, err)
		}
	}
}

func TestAmbientCaps(t *testing.T) {
	held := []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}
	if got := ambientCaps([]string{"net_bind_service", "CAP_SYS_ADMIN", "CAP_NET_BIND_SERVICE"}, held); !reflect.DeepEqual(got, []string{"CAP_NET_BIND_SERVICE"}) {
		t.Errorf("ambient %v", got)
	}
	sec := &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}}}
	spec := &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000}}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	setSecurity(spec, sec, boundingSet())
	c := spec.Process.Capabilities
	for name, set := range map[string][]string{"ambient": c.Ambient, "inheritable": c.Inheritable, "permitted": c.Permitted, "effective": c.Effective} {
		if !reflect.DeepEqual(set, []string{"CAP_NET_BIND_SERVICE"}) {
			t.Errorf("non-root with ambient NET_BIND_SERVICE: %s %v", name, set)
		}
	}
}

func TestDevices(t *testing.T) {
	spec := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	err := setDevices(spec, []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Linux.Devices) != 1 || spec.Linux.Devices[0].Path != "/dev/mynull" || spec.Linux.Devices[0].Major != 1 || spec.Linux.Devices[0].Minor != 3 {
		t.Errorf("devices %+v", spec.Linux.Devices)
	}
	if r := spec.Linux.Resources.Devices; len(r) != 1 || !r[0].Allow || *r[0].Major != 1 || *r[0].Minor != 3 || r[0].Access != "rw" {
		t.Errorf("cgroup rules %+v", r)
	}
	for _, host := range []string{"/", "/etc/passwd", "/dev/../etc"} {
		if err := setDevices(spec, []*runtimeapi.Device{{HostPath: host, ContainerPath: "/dev/x", Permissions: "r"}}, false); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("device %s: %v, want InvalidArgument", host, err)
		}
	}
	priv := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	if err := setDevices(priv, nil, true); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range priv.Linux.Devices {
		found = found || d.Path == "/dev/null"
		if strings.HasPrefix(d.Path, "/dev/pts/") {
			t.Errorf("privileged got the host's pty %s", d.Path)
		}
	}
	if !found {
		t.Errorf("privileged: no /dev/null among %d host devices", len(priv.Linux.Devices))
	}
}

// TestLocalhostSeccompNotRegular: a device or directory named as a profile
// is refused before the daemon reads it (/dev/zero would never end).
func TestLocalhostSeccompNotRegular(t *testing.T) {
	for _, p := range []string{"/dev/zero", "/etc", "/dev/null"} {
		if _, err := localhostSeccomp(p); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "regular file") {
			t.Errorf("%s: %v, want InvalidArgument about a regular file", p, err)
		}
	}
}

// TestCheckPropagation: bidirectional and host-to-container mounts need a
// shared source; private mounts need nothing.
func TestCheckPropagation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	sub := filepath.Join(dir, "vol")
	os.Mkdir(sub, 0o755)
	mount := func(p runtimeapi.MountPropagation) []*runtimeapi.Mount {
		return []*runtimeapi.Mount{{HostPath: sub, ContainerPath: "/v", Propagation: p}}
	}
	if err := syscall.Mount("", dir, "", syscall.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []runtimeapi.MountPropagation{runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER} {
		if err := checkPropagation(mount(p), hostMountOf); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), dir) {
			t.Errorf("%v on a private mount: %v, want InvalidArgument naming %s", p, err, dir)
		}
	}
	if err := checkPropagation(mount(runtimeapi.MountPropagation_PROPAGATION_PRIVATE), hostMountOf); err != nil {
		t.Errorf("private: %v", err)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []runtimeapi.MountPropagation{runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER} {
		if err := checkPropagation(mount(p), hostMountOf); err != nil {
			t.Errorf("%v on a shared mount: %v", p, err)
		}
	}
}
