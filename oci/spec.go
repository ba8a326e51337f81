package oci

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/sys/user"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	peapodcgroups "github.com/peapod-cri/peapod/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Image is what a container takes from its image's config.
type Image struct {
	ID         string
	User       string
	WorkingDir string
	Entrypoint []string
	Cmd        []string
	Env        []string
	StopSignal string   // STOPSIGNAL as the image writes it; "" for none
	Volumes    []string // VOLUME paths
}

// Pod is what a container's spec takes from its pod.
type Pod struct {
	ID        string
	Config    *runtimeapi.PodSandboxConfig
	Dir       string // the pod's files: hostname, resolv.conf, shm
	PausePID  int    // holds the pod's network, UTS and IPC namespaces
	PIDHolder int    // holds the pod's PID and user namespaces; 0 for none
	Cgroup    string // the pod's own cgroup; "" for none
}

// Input is one container to translate.
type Input struct {
	ID           string
	Pod          Pod
	Config       *runtimeapi.ContainerConfig
	Image        Image
	Rootfs       string // the mounted root filesystem; /etc/passwd and /etc/group are read from it
	CgroupParent string // used when the pod has no cgroup of its own
	PidsLimit    int64  // the default pids.max (Options.PidsLimit)
	// ImageVolumes are the sources of the image volumes (Mount.image) by
	// the index of their Mount: the image, or its sub-path, bound
	// read-only on the host (sandbox/hostfs/imagevolume.go).
	ImageVolumes map[int]string
	// TargetPIDNS is the pinned PID namespace of the container a TARGET
	// container (kubectl debug --target) joins (sandbox/hostfs/targetns.go);
	// "" for none.
	TargetPIDNS string
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build turns a CRI container config and its image into an OCI spec,
// starting from runc's default spec. What it takes from the machine
// comes from host, so that the translation can be tested anywhere.
func Build(in Input, host Host) (*specs.Spec, error) {
	cfg, sec := in.Config, in.Config.GetLinux().GetSecurityContext()
	// As containerd: a privileged container only in a privileged pod, so
	// that a pod's privilege is decided once, where admission looks.
	if sec.GetPrivileged() && !in.Pod.Config.GetLinux().GetSecurityContext().GetPrivileged() {
		return nil, fmt.Errorf("privileged container in pod %s, which is not privileged: %w", in.Pod.ID, ErrInvalidArgument)
	}
	spec := specconv.Example()
	spec.Hostname = "" // the pod's UTS namespace already has it
	spec.Root = &specs.Root{Path: in.Rootfs, Readonly: sec.GetReadonlyRootfs()}
	spec.Process.Terminal = cfg.GetTty()
	spec.Process.Rlimits = nil // inherit the daemon's, as containerd does
	spec.Annotations = cfg.GetAnnotations()
	if err := setProcess(spec, in); err != nil {
		return nil, err
	}
	if err := setNamespaces(spec, in.Pod, sec.GetNamespaceOptions(), in.TargetPIDNS, host.CgroupV2); err != nil {
		return nil, err
	}
	spec.Mounts = append(spec.Mounts, podMounts(in.Pod, cfg.GetMounts())...)
	if err := checkPropagation(cfg.GetMounts(), host.mountOf); err != nil {
		return nil, err
	}
	mounts, err := userMounts(cfg.GetMounts(), in.ImageVolumes, spec)
	if err != nil {
		return nil, err
	}
	spec.Mounts = append(spec.Mounts, mounts...)
	setSecurity(spec, sec, host.Bounding)
	if err := setDevices(spec, cfg.GetDevices(), sec.GetPrivileged()); err != nil {
		return nil, err
	}
	if err := setLSMs(spec, sec, host); err != nil {
		return nil, err
	}
	setResources(spec, cfg.GetLinux().GetResources(), host)
	setDefaultPidsLimit(spec, in.PidsLimit)
	if err := peapodcgroups.Check(spec.Linux.Resources); err != nil {
		return nil, fmt.Errorf("resources: %v: %w", err, ErrInvalidArgument)
	}
	parent := in.CgroupParent
	if in.Pod.Cgroup != "" {
		parent = in.Pod.Cgroup
	}
	spec.Linux.CgroupsPath = peapodcgroups.ContainerCgroupsPath(parent, in.ID)
	return spec, nil
}

// setProcess sets what the container runs: arguments, environment,
// working directory and user.
func setProcess(spec *specs.Spec, in Input) error {
	cfg, sec := in.Config, in.Config.GetLinux().GetSecurityContext()
	args := containerArgs(cfg, in.Image)
	if len(args) == 0 {
		return fmt.Errorf("no command: neither the container config nor image %s gives one: %w", in.Image.ID, ErrInvalidArgument)
	}
	spec.Process.Args = args
	spec.Process.Env = containerEnv(in.Image.Env, cfg.GetEnvs())
	if cfg.GetTty() {
		spec.Process.Env = WithTERM(spec.Process.Env)
	}
	spec.Process.Cwd = "/"
	if in.Image.WorkingDir != "" {
		spec.Process.Cwd = in.Image.WorkingDir
	}
	if cfg.GetWorkingDir() != "" {
		spec.Process.Cwd = cfg.GetWorkingDir()
	}
	u, err := containerUser(in.Rootfs, sec, in.Image.User)
	if err != nil {
		return err
	}
	spec.Process.User = u
	return nil
}

// setLSMs applies the AppArmor profile, the SELinux label and the seccomp
// filter; the seccomp default depends on the capabilities already set.
func setLSMs(spec *specs.Spec, sec *runtimeapi.LinuxContainerSecurityContext, host Host) error {
	var err error
	if spec.Process.ApparmorProfile, err = apparmorProfile(sec, host.AppArmor); err != nil {
		return err
	}
	if host.SELinux {
		setSELinux(spec, sec.GetSelinuxOptions())
	}
	if spec.Linux.Seccomp, err = seccompProfile(sec, spec.Process.Capabilities.Bounding); err != nil {
		return err
	}
	return nil
}

// WithTERM gives a process on a terminal TERM=xterm unless its environment
// names a terminal already, as containerd does: without it, programs that
// draw on the terminal (vi, top, less) refuse or misbehave.
func WithTERM(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "TERM=") {
			return env
		}
	}
	return append(env, "TERM=xterm")
}

// containerArgs applies Kubernetes' command/args rules over the image's
// entrypoint and cmd.
func containerArgs(cfg *runtimeapi.ContainerConfig, img Image) []string {
	if len(cfg.GetCommand()) > 0 {
		return append(append([]string{}, cfg.GetCommand()...), cfg.GetArgs()...)
	}
	args := cfg.GetArgs()
	if len(args) == 0 {
		args = img.Cmd
	}
	return append(append([]string{}, img.Entrypoint...), args...)
}

// containerEnv merges the image's environment with the container's, the
// container's winning, and makes sure PATH is set.
func containerEnv(image []string, kvs []*runtimeapi.KeyValue) []string {
	var order []string
	values := map[string]string{}
	set := func(k, v string) {
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = v
	}
	for _, e := range image {
		k, v, _ := strings.Cut(e, "=")
		set(k, v)
	}
	for _, kv := range kvs {
		set(kv.GetKey(), string(kv.GetValue()))
	}
	if _, ok := values["PATH"]; !ok {
		k, v, _ := strings.Cut(defaultPath, "=")
		set(k, v)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+values[k])
	}
	return env
}

// maxImageID is the largest uid or gid an image's /etc/passwd or
// /etc/group may give (moby/sys/user's bound for numeric ones).
const maxImageID = 1<<31 - 1

// containerUser resolves the user to run as from the security context or,
// failing that, the image's USER, against the container's /etc/passwd and
// /etc/group.
func containerUser(rootfs string, sec *runtimeapi.LinuxContainerSecurityContext, imageUser string) (specs.User, error) {
	spec := imageUser
	switch {
	case sec.GetRunAsUser() != nil:
		spec = strconv.FormatInt(sec.GetRunAsUser().GetValue(), 10)
	case sec.GetRunAsUsername() != "":
		spec = sec.GetRunAsUsername()
	}
	if sec.GetRunAsGroup() != nil {
		if sec.GetRunAsUser() == nil && sec.GetRunAsUsername() == "" {
			return specs.User{}, fmt.Errorf("run_as_group is set without run_as_user or run_as_username: %w", ErrInvalidArgument)
		}
		name, _, _ := strings.Cut(spec, ":")
		spec = name + ":" + strconv.FormatInt(sec.GetRunAsGroup().GetValue(), 10)
	}
	// The same parser as user.GetExecUserPath, on files opened safely: a
	// missing file is no file, as there; any other kind is refused.
	passwd, err := openUserDB(rootfs, "/etc/passwd")
	if err != nil {
		return specs.User{}, err
	}
	if passwd != nil {
		defer passwd.Close()
	}
	group, err := openUserDB(rootfs, "/etc/group")
	if err != nil {
		return specs.User{}, err
	}
	if group != nil {
		defer group.Close()
	}
	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, nilIfNone(passwd), nilIfNone(group))
	if err != nil {
		return specs.User{}, fmt.Errorf("resolve user %q in the image: %v: %w", spec, err, ErrInvalidArgument)
	}
	// The library range-checks ids given as numbers, not those it reads
	// from the image's files: a uid of 2^32 there would become 0, root,
	// below the uint32 the spec holds, for an image whose /etc/passwd
	// says otherwise to anyone who reads it.
	for _, id := range append([]int{eu.Uid, eu.Gid}, eu.Sgids...) {
		if id < 0 || id > maxImageID {
			return specs.User{}, fmt.Errorf("resolve user %q in the image: id %d is outside 0-%d: %w", spec, id, maxImageID, ErrInvalidArgument)
		}
	}
	// Groups as containerd sets them: the primary group first, then the
	// pod's supplemental groups, then (policy Merge) the user's groups from
	// the image's /etc/group.
	u := specs.User{UID: uint32(eu.Uid), GID: uint32(eu.Gid)}
	seen := map[uint32]bool{}
	addGroup := func(g uint32) {
		if !seen[g] {
			seen[g] = true
			u.AdditionalGids = append(u.AdditionalGids, g)
		}
	}
	addGroup(u.GID)
	for _, g := range sec.GetSupplementalGroups() {
		addGroup(uint32(g))
	}
	if sec.GetSupplementalGroupsPolicy() != runtimeapi.SupplementalGroupsPolicy_Strict {
		for _, g := range eu.Sgids {
			addGroup(uint32(g))
		}
	}
	return u, nil
}

// openUserDB opens the image's /etc/passwd or /etc/group in rootfs; nil
// when there is none.
func openUserDB(rootfs, name string) (io.ReadCloser, error) {
	f, err := openRootfsFile(rootfs, name, maxUserDBBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the image's %s: %v: %w", name, err, ErrInvalidArgument)
	}
	return f, nil
}

// nilIfNone keeps a missing file an untyped nil reader, which is what
// user.GetExecUser takes for "no such file".
func nilIfNone(f io.ReadCloser) io.Reader {
	if f == nil {
		return nil
	}
	return f
}

// setNamespaces joins the pod's namespaces (held by its pause process) or
// the host's, as the namespace options say; a TARGET PID namespace is the
// target container's, pinned at targetPIDNS.
func setNamespaces(spec *specs.Spec, pod Pod, opts *runtimeapi.NamespaceOption, targetPIDNS string, cgroupV2 bool) error {
	proc := "/proc/" + strconv.Itoa(pod.PausePID) + "/ns/"
	podNS := pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if opts == nil {
		opts = podNS // kubelet always repeats the pod's; crictl users may not
	}
	var ns []specs.LinuxNamespace
	ns = append(ns, specs.LinuxNamespace{Type: specs.MountNamespace})
	// A private cgroup namespace only on v2: on v1 kubelet expects none.
	if cgroupV2 {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	switch opts.GetPid() {
	case runtimeapi.NamespaceMode_CONTAINER:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	case runtimeapi.NamespaceMode_NODE:
		// Without a PID namespace entry the container would share the
		// runner's, the host's: only for a pod that asked for the host's.
		if podNS.GetPid() != runtimeapi.NamespaceMode_NODE {
			return fmt.Errorf("container asks for the host's PID namespace but its pod does not: %w", ErrInvalidArgument)
		}
	case runtimeapi.NamespaceMode_TARGET:
		// kubectl debug --target: the target container's namespace, pinned
		// by handle by the caller (never a /proc/<pid> path a reused PID
		// could redirect).
		if targetPIDNS == "" {
			return fmt.Errorf("container asks for the PID namespace of container %q, which is not running: %w", opts.GetTargetId(), ErrInvalidArgument)
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: targetPIDNS})
	default:
		// An unknown mode is refused rather than left without a PID
		// namespace entry, which would put the container in the host's.
		return fmt.Errorf("PID namespace mode %s is not supported: %w", opts.GetPid(), ErrInvalidArgument)
	case runtimeapi.NamespaceMode_POD:
		if podNS.GetPid() != runtimeapi.NamespaceMode_POD || pod.PIDHolder == 0 {
			return fmt.Errorf("container asks for the pod's PID namespace but the pod has none: %w", ErrInvalidArgument)
		}
		// The name the runner rewrites to the keeper's fd of it.
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/" + strconv.Itoa(pod.PIDHolder) + "/ns/pid"})
	}
	if podNS.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: proc + "net"},
			specs.LinuxNamespace{Type: specs.UTSNamespace, Path: proc + "uts"})
	}
	if podNS.GetIpc() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: proc + "ipc"})
	}
	if PodUserns(pod.Config) != nil {
		// libcontainer reads the mappings from the namespace it joins.
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: UsernsPath(pod.PIDHolder)})
	}
	spec.Linux.Namespaces = ns
	return nil
}

// podMounts are the pod files every container sees unless the kubelet
// mounts its own there.
func podMounts(pod Pod, user []*runtimeapi.Mount) []specs.Mount {
	taken := map[string]bool{}
	for _, m := range user {
		taken[filepath.Clean(m.GetContainerPath())] = true
	}
	var out []specs.Mount
	add := func(dst, src string, opts ...string) {
		if taken[dst] {
			return
		}
		if _, err := os.Stat(src); err != nil {
			return
		}
		out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: append([]string{"rbind", "nosuid", "nodev"}, opts...)})
	}
	add("/etc/hostname", filepath.Join(pod.Dir, "hostname"))
	add("/etc/resolv.conf", filepath.Join(pod.Dir, "resolv.conf"))
	if pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtimeapi.NamespaceMode_NODE {
		add("/dev/shm", "/dev/shm")
	} else {
		add("/dev/shm", filepath.Join(pod.Dir, "shm"), "noexec")
	}
	return out
}

// userMounts turns the kubelet's mounts into bind mounts, with the
// propagation it asks for. The last mount of a path wins, as in Docker.
func userMounts(mounts []*runtimeapi.Mount, imageVolumes map[int]string, spec *specs.Spec) ([]specs.Mount, error) {
	var out []specs.Mount
	for i, m := range mounts {
		if m.GetImage() != nil {
			src, ok := imageVolumes[i]
			if !ok {
				return nil, fmt.Errorf("image volume at %s was not mounted: %w", m.GetContainerPath(), ErrInvalidArgument)
			}
			// Read-only whatever the request says, executable (critest
			// checks), private. No idmapping here: the image store has
			// mapped the image's layers for a user-namespaced pod, as it
			// does for the root filesystem.
			out = append(out, specs.Mount{Destination: m.GetContainerPath(), Type: "bind", Source: src,
				Options: []string{"rbind", "ro", "nosuid", "nodev", "rprivate"}})
			continue
		}
		opts := []string{"rbind"}
		if m.GetReadonly() {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		if m.GetRecursiveReadOnly() {
			opts = append(opts, "rro")
		}
		// Mount.mount_options (noexec, nodev, ...; checked by cri/validate):
		// runc applies them when it remounts the bind.
		opts = append(opts, m.GetMountOptions()...)
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			opts = append(opts, "rprivate")
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			opts = append(opts, "rslave")
			if spec.Linux.RootfsPropagation != "rshared" {
				spec.Linux.RootfsPropagation = "rslave"
			}
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			opts = append(opts, "rshared")
			spec.Linux.RootfsPropagation = "rshared"
		}
		// The kubelet sends mappings for a pod in a user namespace: the
		// volume becomes an idmapped mount (runc), its files as owned in the
		// container as they are on the host.
		out = append(out, specs.Mount{Destination: m.GetContainerPath(), Type: "bind", Source: m.GetHostPath(), Options: opts,
			UIDMappings: IDMappings(m.GetUidMappings()), GIDMappings: IDMappings(m.GetGidMappings())})
	}
	return out, nil
}

// setSecurity applies privileged mode, capabilities (ambient ones too)
// and no_new_privs.
// "All capabilities" means the daemon's bounding set: capabilities the
// daemon lacks (here CAP_SYS_RESOURCE) cannot be given to a container.
func setSecurity(spec *specs.Spec, sec *runtimeapi.LinuxContainerSecurityContext, bounding []string) {
	spec.Process.NoNewPrivileges = sec.GetNoNewPrivs()
	var caps []string
	if sec.GetPrivileged() {
		caps = bounding
		spec.Linux.MaskedPaths = nil
		spec.Linux.ReadonlyPaths = nil
		spec.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		for i := range spec.Mounts {
			if spec.Mounts[i].Destination == "/sys" || spec.Mounts[i].Destination == "/sys/fs/cgroup" {
				spec.Mounts[i].Options = removeString(spec.Mounts[i].Options, "ro")
			}
		}
	} else {
		caps = adjustCaps(sec.GetCapabilities(), bounding)
		if p := sec.GetMaskedPaths(); p != nil {
			spec.Linux.MaskedPaths = p
		}
		if p := sec.GetReadonlyPaths(); p != nil {
			spec.Linux.ReadonlyPaths = p
		}
	}
	spec.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
	}
	if spec.Process.User.UID != 0 && !sec.GetPrivileged() {
		// A non-root user gets capabilities only through files (setuid);
		// the effective and permitted sets start empty as with docker.
		spec.Process.Capabilities.Effective = nil
		spec.Process.Capabilities.Permitted = nil
	}
	if amb := ambientCaps(sec.GetCapabilities().GetAddAmbientCapabilities(), caps); len(amb) > 0 {
		// Ambient capabilities survive execve for a non-root user; the
		// kernel keeps only those also permitted and inheritable.
		c := spec.Process.Capabilities
		c.Ambient, c.Inheritable = amb, amb
		c.Permitted, c.Effective = unionCaps(c.Permitted, amb), unionCaps(c.Effective, amb)
	}
}

// defaultCaps is containerd's and docker's default capability set.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func adjustCaps(c *runtimeapi.Capability, bounding []string) []string {
	set := map[string]bool{}
	for _, n := range defaultCaps {
		set[n] = true
	}
	norm := func(n string) string {
		n = strings.ToUpper(n)
		if n != "ALL" && !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		return n
	}
	for _, n := range c.GetDropCapabilities() {
		if n = norm(n); n == "ALL" {
			set = map[string]bool{}
		} else {
			delete(set, n)
		}
	}
	for _, n := range c.GetAddCapabilities() {
		if n = norm(n); n == "ALL" {
			for _, b := range bounding {
				set[b] = true
			}
		} else {
			set[n] = true
		}
	}
	inBounding := map[string]bool{}
	for _, b := range bounding {
		inBounding[b] = true
	}
	var out []string
	for n := range set {
		if inBounding[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func removeString(list []string, s string) []string {
	var out []string
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}

// setResources applies the container's CPU, memory, hugepage and unified
// limits (translated in package cgroups) and its OOM score adjustment.
func setResources(spec *specs.Spec, res *runtimeapi.LinuxContainerResources, host Host) {
	if res == nil {
		return
	}
	r, lim := spec.Linux.Resources, peapodcgroups.TolerateMissingHugetlb(peapodcgroups.Limits(res, host.SwapAccounted))
	r.Memory, r.CPU, r.HugepageLimits, r.Unified = lim.Memory, lim.CPU, lim.HugepageLimits, lim.Unified
	if adj := int(res.OomScoreAdj); adj != 0 {
		// Never below the daemon's own: lowering needs CAP_SYS_RESOURCE.
		if adj < host.OOMScoreAdj {
			adj = host.OOMScoreAdj
		}
		spec.Process.OOMScoreAdj = &adj
	}
}

// setDefaultPidsLimit gives the container pids.max = limit when limit is
// set and its resources name no pids.max of their own.
func setDefaultPidsLimit(spec *specs.Spec, limit int64) {
	if limit <= 0 {
		return
	}
	if _, ok := spec.Linux.Resources.Unified["pids.max"]; ok {
		return
	}
	spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
}
