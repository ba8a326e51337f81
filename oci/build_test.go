package oci

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The tests of Build run as any user, without a daemon: the host is
// testHost, the rootfs and the pod's files are temporary directories.

var update = flag.Bool("update", false, "rewrite testdata/golden from what Build makes now")

// fakeAppArmor is an AppArmor with the named profiles loaded.
type fakeAppArmor struct {
	loaded        map[string]bool
	defaultLoaded *bool
}

func (f fakeAppArmor) Enabled() bool                    { return true }
func (f fakeAppArmor) Loaded(name string) (bool, error) { return f.loaded[name], nil }
func (f fakeAppArmor) LoadDefault() error {
	*f.defaultLoaded = true
	return nil
}

// testBounding is a bounding set that lacks CAP_SYS_RESOURCE and
// CAP_SYS_MODULE, as a daemon without them would have.
var testBounding = append(slices.Clone(defaultCaps), "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME", "CAP_DAC_READ_SEARCH")

func testHost() Host {
	return Host{
		Bounding:      testBounding,
		CgroupV2:      false,
		SwapAccounted: true,
		OOMScoreAdj:   -500,
		MountOf: func(path string) (string, string, error) {
			switch {
			case strings.HasPrefix(path, "/shared"):
				return "/shared", "shared:7", nil
			case strings.HasPrefix(path, "/slave"):
				return "/slave", "master:7", nil
			}
			return "/", "", nil
		},
	}
}

// fixture is a rootfs with users and groups, and a pod directory with the
// files every container mounts.
type fixture struct {
	rootfs, podDir string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	f := fixture{rootfs: t.TempDir(), podDir: t.TempDir()}
	os.MkdirAll(filepath.Join(f.rootfs, "etc"), 0o755)
	os.WriteFile(filepath.Join(f.rootfs, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(f.rootfs, "etc/group"), []byte("root:x:0:\napp:x:1000:\nvideo:x:44:app\n"), 0o644)
	for _, name := range []string{"hostname", "resolv.conf", "shm"} {
		os.WriteFile(filepath.Join(f.podDir, name), nil, 0o644)
	}
	return f
}

func (f fixture) input(pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) Input {
	if pod == nil {
		pod = &runtimeapi.PodSandboxConfig{}
	}
	if cfg.Command == nil {
		cfg.Command = []string{"/bin/sh"}
	}
	return Input{
		ID:     strings.Repeat("c", 64),
		Pod:    Pod{ID: strings.Repeat("p", 64), Config: pod, Dir: f.podDir, PausePID: 100, PIDHolder: 101, Cgroup: "peapod/pod-x"},
		Config: cfg, Image: Image{ID: "sha256:img", Env: []string{"FROM_IMAGE=1"}},
		Rootfs: f.rootfs, CgroupParent: "peapod", PidsLimit: 1024,
	}
}

func secCfg(sec *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: sec}}
}

func privilegedPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}}}
}

func podNS(ns *runtimeapi.NamespaceOption) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns}}}
}

func profile(t runtimeapi.SecurityProfile_ProfileType, ref string) *runtimeapi.SecurityProfile {
	return &runtimeapi.SecurityProfile{ProfileType: t, LocalhostRef: ref}
}

func i64(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }

func nsPath(s *specs.Spec, typ specs.LinuxNamespaceType) (string, bool) {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return ns.Path, true
		}
	}
	return "", false
}

func mountAt(s *specs.Spec, dst string) *specs.Mount {
	var found *specs.Mount
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			found = &s.Mounts[i]
		}
	}
	return found
}

func deniedCall(s *specs.Spec, name string) bool {
	if s.Linux.Seccomp == nil {
		return false
	}
	for _, sc := range s.Linux.Seccomp.Syscalls {
		if sc.Action == specs.ActErrno && slices.Contains(sc.Names, name) {
			return true
		}
	}
	return false
}

// TestBuildSecurityContext covers each field of the container security
// context that the kubelet and critest set, one case at a time.
func TestBuildSecurityContext(t *testing.T) {
	f := newFixture(t)
	seccompFile := filepath.Join(t.TempDir(), "profile.json")
	os.WriteFile(seccompFile, []byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}`), 0o644)
	noAction := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(noAction, []byte(`{}`), 0o644)

	for _, tc := range []struct {
		name    string
		pod     *runtimeapi.PodSandboxConfig
		cfg     *runtimeapi.ContainerConfig
		host    func(*Host)
		wantErr bool
		check   func(t *testing.T, s *specs.Spec)
	}{
		{name: "defaults: docker's capabilities, masked paths, closed device cgroup, no seccomp unless asked",
			cfg: secCfg(nil), check: func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Process.Capabilities.Bounding, sorted(defaultCaps)) {
					t.Errorf("bounding %v", s.Process.Capabilities.Bounding)
				}
				if len(s.Linux.MaskedPaths) == 0 || len(s.Linux.ReadonlyPaths) == 0 {
					t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
				}
				if d := s.Linux.Resources.Devices; len(d) != 1 || d[0].Allow {
					t.Errorf("device cgroup %+v, want deny-all only", d)
				}
				if s.Linux.Seccomp != nil || s.Process.NoNewPrivileges || s.Root.Readonly {
					t.Errorf("seccomp %v nnp %v ro %v", s.Linux.Seccomp, s.Process.NoNewPrivileges, s.Root.Readonly)
				}
				if s.Process.User.UID != 0 || s.Process.User.GID != 0 {
					t.Errorf("user %+v", s.Process.User)
				}
				if s.Linux.Resources.Pids == nil || *s.Linux.Resources.Pids.Limit != 1024 {
					t.Errorf("default pids limit %+v", s.Linux.Resources.Pids)
				}
				if s.Linux.CgroupsPath != "peapod/pod-x/peapod-"+strings.Repeat("c", 64) {
					t.Errorf("cgroup %s", s.Linux.CgroupsPath)
				}
			}},
		{name: "privileged in a privileged pod: all of the daemon's capabilities, no masks, every device, /sys writable",
			pod: privilegedPod(), cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Privileged: true, Seccomp: profile(runtimeapi.SecurityProfile_RuntimeDefault, "")}),
			check: func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Process.Capabilities.Bounding, testBounding) {
					t.Errorf("bounding %v, want the daemon's %v", s.Process.Capabilities.Bounding, testBounding)
				}
				if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
					t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
				}
				if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow || d[0].Access != "rwm" {
					t.Errorf("device cgroup %+v", d)
				}
				if m := mountAt(s, "/sys"); m == nil || slices.Contains(m.Options, "ro") {
					t.Errorf("/sys %+v", m)
				}
				if s.Linux.Seccomp != nil {
					t.Errorf("privileged got a seccomp filter")
				}
				if !slices.ContainsFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/null" }) {
					t.Errorf("no host devices")
				}
			}},
		{name: "privileged container in an unprivileged pod is refused",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Privileged: true}), wantErr: true},
		{name: "capabilities: drop ALL, add two; one the daemon lacks is left out",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{
				DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"net_admin", "CAP_KILL", "SYS_MODULE"}}}),
			check: func(t *testing.T, s *specs.Spec) {
				want := []string{"CAP_KILL", "CAP_NET_ADMIN"}
				c := s.Process.Capabilities
				if !slices.Equal(c.Bounding, want) || !slices.Equal(c.Effective, want) || !slices.Equal(c.Permitted, want) {
					t.Errorf("caps %+v, want %v", c, want)
				}
			}},
		{name: "capabilities: add ALL is the daemon's bounding set",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}}),
			check: func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Process.Capabilities.Bounding, sorted(testBounding)) {
					t.Errorf("bounding %v", s.Process.Capabilities.Bounding)
				}
			}},
		{name: "ambient capabilities for a non-root user",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), Capabilities: &runtimeapi.Capability{AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}}}),
			check: func(t *testing.T, s *specs.Spec) {
				c, want := s.Process.Capabilities, []string{"CAP_NET_BIND_SERVICE"}
				if !slices.Equal(c.Ambient, want) || !slices.Equal(c.Inheritable, want) || !slices.Equal(c.Effective, want) || !slices.Equal(c.Permitted, want) {
					t.Errorf("caps %+v", c)
				}
			}},
		{name: "run_as_user: a non-root user starts without effective capabilities",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000)}),
			check: func(t *testing.T, s *specs.Spec) {
				if u := s.Process.User; u.UID != 1000 || u.GID != 1000 || !slices.Equal(u.AdditionalGids, []uint32{1000, 44}) {
					t.Errorf("user %+v", u)
				}
				if c := s.Process.Capabilities; c.Effective != nil || c.Permitted != nil || len(c.Bounding) == 0 {
					t.Errorf("caps %+v", c)
				}
			}},
		{name: "run_as_username, run_as_group and supplemental groups (an explicit group drops the image's)",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "app", RunAsGroup: i64(7), SupplementalGroups: []int64{9, 7}}),
			check: func(t *testing.T, s *specs.Spec) {
				if u := s.Process.User; u.UID != 1000 || u.GID != 7 || !slices.Equal(u.AdditionalGids, []uint32{7, 9}) {
					t.Errorf("user %+v", u)
				}
			}},
		{name: "supplemental groups policy Strict leaves the image's groups out",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), SupplementalGroups: []int64{9},
				SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict}),
			check: func(t *testing.T, s *specs.Spec) {
				if u := s.Process.User; !slices.Equal(u.AdditionalGids, []uint32{1000, 9}) {
					t.Errorf("groups %v", u.AdditionalGids)
				}
			}},
		{name: "run_as_group without a user is refused",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{RunAsGroup: i64(7)}), wantErr: true},
		{name: "readonly rootfs and no_new_privs",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{ReadonlyRootfs: true, NoNewPrivs: true}),
			check: func(t *testing.T, s *specs.Spec) {
				if !s.Root.Readonly || !s.Process.NoNewPrivileges {
					t.Errorf("ro %v nnp %v", s.Root.Readonly, s.Process.NoNewPrivileges)
				}
			}},
		{name: "masked and readonly paths replace the defaults",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{MaskedPaths: []string{"/proc/a"}, ReadonlyPaths: []string{"/proc/b"}}),
			check: func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Linux.MaskedPaths, []string{"/proc/a"}) || !slices.Equal(s.Linux.ReadonlyPaths, []string{"/proc/b"}) {
					t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
				}
			}},
		{name: "seccomp RuntimeDefault denies what the capabilities do not allow",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Seccomp: profile(runtimeapi.SecurityProfile_RuntimeDefault, "")}),
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActAllow {
					t.Fatalf("seccomp %+v", s.Linux.Seccomp)
				}
				for _, call := range []string{"mount", "unshare", "kexec_load", "ptrace_not_listed_is_allowed"} {
					if deniedCall(s, call) != (call != "ptrace_not_listed_is_allowed") {
						t.Errorf("%s denied = %v", call, deniedCall(s, call))
					}
				}
			}},
		{name: "seccomp RuntimeDefault with CAP_SYS_ADMIN allows mount",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Seccomp: profile(runtimeapi.SecurityProfile_RuntimeDefault, ""),
				Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}}}),
			check: func(t *testing.T, s *specs.Spec) {
				if deniedCall(s, "mount") || !deniedCall(s, "kexec_load") {
					t.Errorf("mount denied %v, kexec_load denied %v", deniedCall(s, "mount"), deniedCall(s, "kexec_load"))
				}
			}},
		{name: "seccomp Localhost is read from the file",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Seccomp: profile(runtimeapi.SecurityProfile_Localhost, seccompFile)}),
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || len(s.Linux.Seccomp.Syscalls) != 1 {
					t.Errorf("seccomp %+v", s.Linux.Seccomp)
				}
			}},
		{name: "seccomp Localhost relative path is refused",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Seccomp: profile(runtimeapi.SecurityProfile_Localhost, "profile.json")}), wantErr: true},
		{name: "seccomp Localhost without defaultAction is refused",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Seccomp: profile(runtimeapi.SecurityProfile_Localhost, noAction)}), wantErr: true},
		{name: "seccomp Unconfined",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Seccomp: profile(runtimeapi.SecurityProfile_Unconfined, "")}),
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Seccomp != nil {
					t.Errorf("seccomp %+v", s.Linux.Seccomp)
				}
			}},
		{name: "AppArmor RuntimeDefault loads and names peapod-default",
			cfg:  secCfg(&runtimeapi.LinuxContainerSecurityContext{Apparmor: profile(runtimeapi.SecurityProfile_RuntimeDefault, "")}),
			host: func(h *Host) { h.AppArmor = fakeAppArmor{defaultLoaded: new(bool)} },
			check: func(t *testing.T, s *specs.Spec) {
				if s.Process.ApparmorProfile != defaultAppArmorProfile {
					t.Errorf("profile %q", s.Process.ApparmorProfile)
				}
			}},
		{name: "AppArmor Localhost, loaded",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Apparmor: profile(runtimeapi.SecurityProfile_Localhost, "localhost/mine")}),
			host: func(h *Host) {
				h.AppArmor = fakeAppArmor{loaded: map[string]bool{"mine": true}, defaultLoaded: new(bool)}
			},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Process.ApparmorProfile != "mine" {
					t.Errorf("profile %q", s.Process.ApparmorProfile)
				}
			}},
		{name: "AppArmor Localhost, not loaded, is refused",
			cfg:  secCfg(&runtimeapi.LinuxContainerSecurityContext{Apparmor: profile(runtimeapi.SecurityProfile_Localhost, "other")}),
			host: func(h *Host) { h.AppArmor = fakeAppArmor{defaultLoaded: new(bool)} }, wantErr: true},
		{name: "AppArmor Localhost on a host without AppArmor is refused",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{Apparmor: profile(runtimeapi.SecurityProfile_Localhost, "mine")}), wantErr: true},
		{name: "AppArmor Unconfined",
			cfg:  secCfg(&runtimeapi.LinuxContainerSecurityContext{Apparmor: profile(runtimeapi.SecurityProfile_Unconfined, "")}),
			host: func(h *Host) { h.AppArmor = fakeAppArmor{defaultLoaded: new(bool)} },
			check: func(t *testing.T, s *specs.Spec) {
				if s.Process.ApparmorProfile != "" {
					t.Errorf("profile %q", s.Process.ApparmorProfile)
				}
			}},
		{name: "SELinux options label the process and the mounts",
			cfg:  secCfg(&runtimeapi.LinuxContainerSecurityContext{SelinuxOptions: &runtimeapi.SELinuxOption{Type: "spc_t", Level: "s0:c1,c2"}}),
			host: func(h *Host) { h.SELinux = true },
			check: func(t *testing.T, s *specs.Spec) {
				if s.Process.SelinuxLabel != "system_u:system_r:spc_t:s0:c1,c2" || s.Linux.MountLabel != "system_u:object_r:container_file_t:s0:c1,c2" {
					t.Errorf("label %q mount label %q", s.Process.SelinuxLabel, s.Linux.MountLabel)
				}
			}},
		{name: "SELinux options are ignored without SELinux",
			cfg: secCfg(&runtimeapi.LinuxContainerSecurityContext{SelinuxOptions: &runtimeapi.SELinuxOption{Type: "spc_t"}}),
			check: func(t *testing.T, s *specs.Spec) {
				if s.Process.SelinuxLabel != "" || s.Linux.MountLabel != "" {
					t.Errorf("label %q", s.Process.SelinuxLabel)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := testHost()
			if tc.host != nil {
				tc.host(&host)
			}
			s, err := Build(f.input(tc.pod, tc.cfg), host)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("got %v, want ErrInvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

// TestBuildNamespaces: which namespaces a container gets and which of the
// pod's it joins, by the pod's and the container's namespace options.
func TestBuildNamespaces(t *testing.T) {
	f := newFixture(t)
	const pause, holder = "/proc/100/ns/", "/proc/101/ns/"
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
		Uids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}}
	for _, tc := range []struct {
		name        string
		pod, ctr    *runtimeapi.NamespaceOption
		cgroupV2    bool
		targetPIDNS string
		want        map[specs.LinuxNamespaceType]string // type → path; "" a new one
		wantErr     bool
	}{
		{name: "pod namespaces, own PID namespace",
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}, ctr: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.PIDNamespace: "",
				specs.NetworkNamespace: pause + "net", specs.UTSNamespace: pause + "uts", specs.IPCNamespace: pause + "ipc"}},
		{name: "cgroup namespace on cgroup v2", cgroupV2: true,
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.CgroupNamespace: "", specs.PIDNamespace: "",
				specs.NetworkNamespace: pause + "net", specs.UTSNamespace: pause + "uts", specs.IPCNamespace: pause + "ipc"}},
		{name: "the pod's PID namespace, named by its holder",
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}, ctr: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.PIDNamespace: holder + "pid",
				specs.NetworkNamespace: pause + "net", specs.UTSNamespace: pause + "uts", specs.IPCNamespace: pause + "ipc"}},
		{name: "the pod's PID namespace when the pod has none is refused",
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}, ctr: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}, wantErr: true},
		{name: "TARGET without a running target is refused, never the host's PID namespace",
			ctr: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "abc"}, wantErr: true},
		{name: "TARGET joins the target's pinned PID namespace", targetPIDNS: "/bundle/target-pidns",
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			ctr: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "abc"},
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.PIDNamespace: "/bundle/target-pidns",
				specs.NetworkNamespace: pause + "net", specs.UTSNamespace: pause + "uts", specs.IPCNamespace: pause + "ipc"}},
		{name: "the host's PID namespace when the pod has its own is refused",
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}, ctr: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}, wantErr: true},
		{name: "no options repeat the pod's",
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.PIDNamespace: holder + "pid",
				specs.NetworkNamespace: pause + "net", specs.UTSNamespace: pause + "uts", specs.IPCNamespace: pause + "ipc"}},
		{name: "host network, IPC and PID",
			pod:  &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE},
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: ""}},
		{name: "user namespace of the pod, joined through its holder",
			pod: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: userns},
			want: map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.PIDNamespace: holder + "pid",
				specs.NetworkNamespace: pause + "net", specs.UTSNamespace: pause + "uts", specs.IPCNamespace: pause + "ipc", specs.UserNamespace: holder + "user"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := testHost()
			host.CgroupV2 = tc.cgroupV2
			cfg := secCfg(&runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: tc.ctr})
			in := f.input(podNS(tc.pod), cfg)
			in.TargetPIDNS = tc.targetPIDNS
			s, err := Build(in, host)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("got %v, want ErrInvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[specs.LinuxNamespaceType]string{}
			for _, ns := range s.Linux.Namespaces {
				got[ns.Type] = ns.Path
			}
			if !mapsEqual(got, tc.want) {
				t.Errorf("namespaces %v, want %v", got, tc.want)
			}
		})
	}
}

func mapsEqual[K comparable](a, b map[K]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestBuildMounts: the pod's files, the kubelet's mounts with their
// propagation and idmapping, and devices.
func TestBuildMounts(t *testing.T) {
	f := newFixture(t)
	build := func(t *testing.T, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (*specs.Spec, error) {
		t.Helper()
		return Build(f.input(pod, cfg), testHost())
	}
	t.Run("pod files, unless the kubelet mounts its own", func(t *testing.T) {
		s, err := build(t, nil, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{{HostPath: "/x", ContainerPath: "/etc/resolv.conf/"}}})
		if err != nil {
			t.Fatal(err)
		}
		if m := mountAt(s, "/etc/hostname"); m == nil || m.Source != filepath.Join(f.podDir, "hostname") {
			t.Errorf("/etc/hostname %+v", m)
		}
		if m := mountAt(s, "/etc/resolv.conf"); m != nil && m.Source != "/x" {
			t.Errorf("/etc/resolv.conf from the pod despite the kubelet's: %+v", m)
		}
		if m := mountAt(s, "/dev/shm"); m == nil || m.Source != filepath.Join(f.podDir, "shm") || !slices.Contains(m.Options, "noexec") {
			t.Errorf("/dev/shm %+v", m)
		}
	})
	t.Run("host IPC shares the host's /dev/shm", func(t *testing.T) {
		s, err := build(t, podNS(&runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}), &runtimeapi.ContainerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if m := mountAt(s, "/dev/shm"); m == nil || m.Source != "/dev/shm" {
			t.Errorf("/dev/shm %+v", m)
		}
	})
	t.Run("propagation and read-only", func(t *testing.T) {
		s, err := build(t, nil, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{
			{HostPath: "/data", ContainerPath: "/ro", Readonly: true, RecursiveReadOnly: true},
			{HostPath: "/slave/v", ContainerPath: "/h2c", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			{HostPath: "/shared/v", ContainerPath: "/bi", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		}})
		if err != nil {
			t.Fatal(err)
		}
		for dst, want := range map[string][]string{"/ro": {"rbind", "ro", "rro", "rprivate"}, "/h2c": {"rbind", "rw", "rslave"}, "/bi": {"rbind", "rw", "rshared"}} {
			if m := mountAt(s, dst); m == nil || !slices.Equal(m.Options, want) {
				t.Errorf("%s: %+v, want options %v", dst, m, want)
			}
		}
		if s.Linux.RootfsPropagation != "rshared" {
			t.Errorf("rootfs propagation %q", s.Linux.RootfsPropagation)
		}
	})
	for _, tc := range []struct {
		name string
		m    *runtimeapi.Mount
	}{
		{"bidirectional from a slave mount", &runtimeapi.Mount{HostPath: "/slave/v", ContainerPath: "/v", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}},
		{"host-to-container from a private mount", &runtimeapi.Mount{HostPath: "/private/v", ContainerPath: "/v", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			if _, err := build(t, nil, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{tc.m}}); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
	t.Run("idmapped volume in a user namespace", func(t *testing.T) {
		maps := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
		s, err := build(t, nil, &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{{HostPath: "/data", ContainerPath: "/v", UidMappings: maps, GidMappings: maps}}})
		if err != nil {
			t.Fatal(err)
		}
		want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		if m := mountAt(s, "/v"); m == nil || !slices.Equal(m.UIDMappings, want) || !slices.Equal(m.GIDMappings, want) {
			t.Errorf("mount %+v", m)
		}
	})
	t.Run("device: node and cgroup rule", func(t *testing.T) {
		s, err := build(t, nil, &runtimeapi.ContainerConfig{Devices: []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mine", Permissions: "rw"}}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/mine" && d.Major == 1 && d.Minor == 3 }) {
			t.Errorf("devices %+v", s.Linux.Devices)
		}
		last := s.Linux.Resources.Devices[len(s.Linux.Resources.Devices)-1]
		if !last.Allow || *last.Major != 1 || *last.Minor != 3 || last.Access != "rw" {
			t.Errorf("cgroup rule %+v", last)
		}
	})
	t.Run("device that is not one is refused", func(t *testing.T) {
		if _, err := build(t, nil, &runtimeapi.ContainerConfig{Devices: []*runtimeapi.Device{{HostPath: "/etc/passwd", ContainerPath: "/dev/x", Permissions: "r"}}}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("got %v", err)
		}
	})
}

// TestBuildProcessAndResources: command, environment, working directory,
// terminal, annotations and resources.
func TestBuildProcessAndResources(t *testing.T) {
	f := newFixture(t)
	in := f.input(nil, &runtimeapi.ContainerConfig{
		Command: []string{"/app"}, Args: []string{"-v"}, WorkingDir: "/work", Tty: true,
		Envs:        []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}},
		Annotations: map[string]string{"k": "v"},
		Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
			CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 64 << 20, OomScoreAdj: -999, CpusetCpus: "0"}},
	})
	s, err := Build(in, testHost())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Args, []string{"/app", "-v"}) || s.Process.Cwd != "/work" || !s.Process.Terminal {
		t.Errorf("process %+v", s.Process)
	}
	if !slices.Equal(s.Process.Env, []string{"FROM_IMAGE=1", "A=1", defaultPath, "TERM=xterm"}) {
		t.Errorf("env %v", s.Process.Env)
	}
	if s.Annotations["k"] != "v" || s.Process.Rlimits != nil || s.Hostname != "" {
		t.Errorf("annotations %v rlimits %v hostname %q", s.Annotations, s.Process.Rlimits, s.Hostname)
	}
	r := s.Linux.Resources
	if r.CPU == nil || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.CPU.Shares != 512 || r.CPU.Cpus != "0" {
		t.Errorf("cpu %+v", r.CPU)
	}
	if r.Memory == nil || *r.Memory.Limit != 64<<20 {
		t.Errorf("memory %+v", r.Memory)
	}
	if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != -500 {
		t.Errorf("oom_score_adj %v, want the daemon's -500 as the floor", s.Process.OOMScoreAdj)
	}
	in.Config.Command, in.Image.Entrypoint, in.Image.Cmd = nil, nil, nil
	in.Config.Args = nil
	if _, err := Build(in, testHost()); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("no command: %v", err)
	}
}

// TestBuildGolden compares whole specs with testdata/golden, so that a
// change anywhere in the translation shows up in review as a diff of the
// spec. go test ./oci/ -run TestBuildGolden -update rewrites them.
func TestBuildGolden(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		pod  *runtimeapi.PodSandboxConfig
		cfg  *runtimeapi.ContainerConfig
	}{
		{"default", nil, &runtimeapi.ContainerConfig{}},
		{"restricted", podNS(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}), &runtimeapi.ContainerConfig{
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: i64(1000), RunAsGroup: i64(1000), SupplementalGroups: []int64{2000}, ReadonlyRootfs: true, NoNewPrivs: true,
				Capabilities:     &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
				Seccomp:          profile(runtimeapi.SecurityProfile_RuntimeDefault, ""),
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
			}}}},
		{"userns", podNS(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}}}),
			&runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{{HostPath: "/data", ContainerPath: "/data",
				UidMappings: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}, GidMappings: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}}}}},
		{"host-namespaces", podNS(&runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE}),
			&runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30, CpuShares: 2}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Build(f.input(tc.pod, tc.cfg), testHost())
			if err != nil {
				t.Fatal(err)
			}
			if s.Linux.Seccomp != nil {
				for i := range s.Linux.Seccomp.Syscalls {
					slices.Sort(s.Linux.Seccomp.Syscalls[i].Names) // built from a map
				}
			}
			got, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = []byte(strings.NewReplacer(f.rootfs, "$ROOTFS", f.podDir, "$PODDIR").Replace(string(got)) + "\n")
			path := filepath.Join("testdata", "golden", tc.name+".json")
			if *update {
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("spec differs from %s (run with -update and review the diff):\n%s", path, got)
			}
		})
	}
}
