package oci

import (
	"errors"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestContainerArgs(t *testing.T) {
	img := Image{Entrypoint: []string{"/ep"}, Cmd: []string{"cmd-arg"}}
	for _, tc := range []struct {
		name      string
		cmd, args []string
		want      []string
	}{
		{"image defaults", nil, nil, []string{"/ep", "cmd-arg"}},
		{"args replace image cmd", nil, []string{"a"}, []string{"/ep", "a"}},
		{"command replaces entrypoint and cmd", []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"command and args", []string{"/bin/sh", "-c"}, []string{"echo"}, []string{"/bin/sh", "-c", "echo"}},
	} {
		got := containerArgs(&runtimeapi.ContainerConfig{Command: tc.cmd, Args: tc.args}, img)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	got := containerEnv([]string{"A=1", "B=2"}, []*runtimeapi.KeyValue{{Key: "B", Value: []byte("3")}, {Key: "C", Value: []byte("x=y")}})
	want := []string{"A=1", "B=3", "C=x=y", defaultPath}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env %v, want %v", got, want)
	}
	if got := containerEnv([]string{"PATH=/x"}, nil); !reflect.DeepEqual(got, []string{"PATH=/x"}) {
		t.Errorf("image PATH replaced: %v", got)
	}
}

func TestAdjustCaps(t *testing.T) {
	bounding := []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SETUID"}
	for _, tc := range []struct {
		name      string
		add, drop []string
		want      []string
	}{
		{"add one, clamp to bounding", []string{"NET_ADMIN"}, []string{"CHOWN", "KILL", "SETUID"}, []string{"CAP_NET_ADMIN"}},
		{"drop all then add", []string{"CAP_KILL"}, []string{"ALL"}, []string{"CAP_KILL"}},
		{"add all is the bounding set", []string{"ALL"}, nil, bounding},
	} {
		got := adjustCaps(&runtimeapi.Capability{AddCapabilities: tc.add, DropCapabilities: tc.drop}, bounding)
		if want := sorted(tc.want); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", tc.name, got, want)
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestContainerUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	// wrap and wrapgid: ids of 2^32, which a uint32 truncates to root's 0;
	// moby/sys/user range-checks numeric arguments only, not file entries.
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\n"+
		"wrap:x:4294967296:33::/:/bin/sh\nwrapgid:x:34:4294967296::/:/bin/sh\nwrapgroups:x:35:35::/:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nwww-data:x:33:\nextra:x:50:www-data\nsneaky:x:4294967296:wrapgroups\n"), 0o644)
	uid := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	for _, tc := range []struct {
		name       string
		sec        *runtimeapi.LinuxContainerSecurityContext
		image      string
		uid, gid   uint32
		additional []uint32
		ok         bool
	}{
		{"image user by name", nil, "www-data", 33, 33, []uint32{33, 50}, true},
		{"image uid:gid", nil, "1003:1004", 1003, 1004, []uint32{1004}, true},
		{"run as user wins", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(1000)}, "www-data", 1000, 0, []uint32{0}, true},
		{"run as group", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: uid(7), RunAsGroup: uid(8)}, "", 7, 8, []uint32{8}, true},
		{"run as group without user", &runtimeapi.LinuxContainerSecurityContext{RunAsGroup: uid(8)}, "", 0, 0, nil, false},
		{"supplemental merged before image groups", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data", SupplementalGroups: []int64{99}}, "", 33, 33, []uint32{33, 99, 50}, true},
		{"strict policy drops image groups", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data", SupplementalGroups: []int64{99},
			SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict}, "", 33, 33, []uint32{33, 99}, true},
		{"unknown name", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "ghost"}, "", 0, 0, nil, false},
		{"passwd uid past 2^31", nil, "wrap", 0, 0, nil, false},
		{"passwd gid past 2^31", nil, "wrapgid", 0, 0, nil, false},
		{"run as a name whose uid is past 2^31", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "wrap"}, "", 0, 0, nil, false},
		{"image group gid past 2^31", nil, "wrapgroups", 0, 0, nil, false},
	} {
		u, err := containerUser(root, tc.sec, tc.image)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if err == nil && (u.UID != tc.uid || u.GID != tc.gid || !reflect.DeepEqual(u.AdditionalGids, tc.additional)) {
			t.Errorf("%s: %+v, want %d:%d %v", tc.name, u, tc.uid, tc.gid, tc.additional)
		}
	}
}

func TestDefaultPidsLimit(t *testing.T) {
	spec := func(unified map[string]string) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{Unified: unified}}}
	}
	s := spec(nil)
	setDefaultPidsLimit(s, 0)
	if s.Linux.Resources.Pids != nil {
		t.Errorf("pids_limit 0 set a limit: %v", *s.Linux.Resources.Pids.Limit)
	}
	setDefaultPidsLimit(s, 50)
	if s.Linux.Resources.Pids == nil || *s.Linux.Resources.Pids.Limit != 50 {
		t.Errorf("pids_limit 50: %+v", s.Linux.Resources.Pids)
	}
	s = spec(map[string]string{"pids.max": "80"})
	setDefaultPidsLimit(s, 50)
	if s.Linux.Resources.Pids != nil {
		t.Errorf("the default replaced the container's own pids.max")
	}
}

// TestUserMountOptions: Mount.mount_options (CRI 1.37) reach the OCI bind
// mount, beside the options from the mount's own fields.
func TestUserMountOptions(t *testing.T) {
	spec := &specs.Spec{Linux: &specs.Linux{}}
	for _, c := range []struct {
		m    *runtimeapi.Mount
		want []string
	}{
		{&runtimeapi.Mount{ContainerPath: "/a", HostPath: "/h", Readonly: true, MountOptions: []string{"noexec", "nodev"}},
			[]string{"rbind", "ro", "noexec", "nodev", "rprivate"}},
		{&runtimeapi.Mount{ContainerPath: "/b", HostPath: "/h", MountOptions: []string{"nosuid"}, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			[]string{"rbind", "rw", "nosuid", "rslave"}},
		{&runtimeapi.Mount{ContainerPath: "/c", HostPath: "/h"}, []string{"rbind", "rw", "rprivate"}},
	} {
		got, err := userMounts([]*runtimeapi.Mount{c.m}, nil, spec)
		if err != nil || len(got) != 1 || !slices.Equal(got[0].Options, c.want) {
			t.Errorf("%s: options %v (%v), want %v", c.m.ContainerPath, got, err, c.want)
		}
	}
}

// TestImageVolumeMount: an image volume's bind takes the source the
// sandbox bound, read-only and private whatever the request says, without
// the kubelet's idmapping (the image store maps the layers); one the
// sandbox did not mount is refused rather than bound from "".
func TestImageVolumeMount(t *testing.T) {
	spec := &specs.Spec{Linux: &specs.Linux{}}
	img := &runtimeapi.Mount{ContainerPath: "/iv", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "busybox"},
		Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL,
		UidMappings: []*runtimeapi.IDMapping{{HostId: 1000, ContainerId: 0, Length: 65536}}}
	mounts := []*runtimeapi.Mount{{ContainerPath: "/h", HostPath: "/h"}, img}
	got, err := userMounts(mounts, map[int]string{1: "/state/image-volumes/c/1"}, spec)
	if err != nil || len(got) != 2 {
		t.Fatalf("userMounts: %v %v", got, err)
	}
	m := got[1]
	if m.Source != "/state/image-volumes/c/1" || m.Destination != "/iv" || !slices.Equal(m.Options, []string{"rbind", "ro", "nosuid", "nodev", "rprivate"}) || m.UIDMappings != nil {
		t.Errorf("image volume mount %+v", m)
	}
	if spec.Linux.RootfsPropagation != "" {
		t.Errorf("an image volume changed the root propagation to %q", spec.Linux.RootfsPropagation)
	}
	if _, err := userMounts([]*runtimeapi.Mount{img}, nil, spec); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unmounted image volume: %v, want ErrInvalidArgument", err)
	}
}
