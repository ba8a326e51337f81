package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// usernsOptions is what the kubelet sends for hostUsers: false.
func usernsOptions(hostID uint32) *runtimeapi.UserNamespace {
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: hostID, Length: 65536}}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
}

func execOut(t *testing.T, d *daemon, id string, cmd ...string) string {
	t.Helper()
	r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 20})
	if err != nil {
		t.Fatalf("exec %v: %v", cmd, err)
	}
	if r.ExitCode != 0 {
		t.Fatalf("exec %v: exit %d: %s%s", cmd, r.ExitCode, r.Stdout, r.Stderr)
	}
	return string(r.Stdout)
}

func fileOwner(t *testing.T, path string) uint32 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid
}

// nsInode is the inode of a namespace file (which namespace it is).
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// ownerUserns is the inode of the user namespace that owns namespace path.
func ownerUserns(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatalf("NS_GET_USERNS %s: %v", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestUserNamespacePod runs a hostUsers: false pod beside a host-user pod:
// the container is root inside, mapped to the kubelet's range, the pod's
// namespaces belong to its user namespace while the keeper stays in the
// host's, an idmapped volume keeps host ownership, a plain one shows the
// mapped IDs, and removing the pod leaves no holder process or mount.
func TestUserNamespacePod(t *testing.T) {
	d, image := readyDaemon(t)
	// The containers pass through the state directory's path as "other".
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.RuntimeHandlers) == 0 || !st.RuntimeHandlers[0].GetFeatures().GetUserNamespaces() {
		t.Skipf("the daemon does not offer user namespaces here (see its log)")
	}

	const hostID = 300000
	mapped, plain := filepath.Join(d.Dir, "vol-mapped"), filepath.Join(d.Dir, "vol-plain")
	for _, dir := range []string{mapped, plain} {
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o777)
	}
	logDir := filepath.Join(d.Dir, "logs")
	podCfg := podConfig("userns", logDir)
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(hostID)},
	}
	pod := runPod(t, d, podCfg).PodSandboxId
	u := usernsOptions(hostID)
	cfg := containerConfig("userns", image, "sleep", "300")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions,
	}}
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/mapped", HostPath: mapped, UidMappings: u.Uids, GidMappings: u.Gids},
		{ContainerPath: "/plain", HostPath: plain},
	}
	ctr := startContainer(t, d, pod, podCfg, cfg)

	if got := strings.Fields(execOut(t, d, ctr, "cat", "/proc/self/uid_map")); strings.Join(got, " ") != "0 300000 65536" {
		t.Errorf("uid_map in the container = %v, want 0 300000 65536", got)
	}
	if got := strings.Fields(execOut(t, d, ctr, "cat", "/proc/self/gid_map")); strings.Join(got, " ") != "0 300000 65536" {
		t.Errorf("gid_map in the container = %v, want 0 300000 65536", got)
	}
	if got := strings.TrimSpace(execOut(t, d, ctr, "id", "-u")); got != "0" {
		t.Errorf("id -u in the container = %q, want 0", got)
	}
	if got := strings.TrimSpace(execOut(t, d, ctr, "hostname")); got != "userns-host" {
		t.Errorf("hostname = %q", got)
	}
	// Root in the container owns its root filesystem and the pod files.
	if got := strings.Fields(execOut(t, d, ctr, "stat", "-c", "%u", "/", "/etc/hostname", "/etc/resolv.conf", "/dev/shm")); strings.Join(got, " ") != "0 0 0 0" {
		t.Errorf("owners of / /etc/hostname /etc/resolv.conf /dev/shm in the container = %v, want 0", got)
	}
	execOut(t, d, ctr, "sh", "-c", "touch /mapped/f /plain/f /rootfs-f /dev/shm/f && mkdir /newdir")
	// Through the idmapped volume the container's root writes as the host's
	// root; through the plain bind mount as its host ID.
	if o := fileOwner(t, filepath.Join(mapped, "f")); o != 0 {
		t.Errorf("file written to the idmapped volume is owned by %d on the host, want 0", o)
	}
	if o := fileOwner(t, filepath.Join(plain, "f")); o != hostID {
		t.Errorf("file written to the plain volume is owned by %d on the host, want %d", o, hostID)
	}
	if o := fileOwner(t, filepath.Join(d.State, "userns", ctr, "rootfs", "rootfs-f")); o != hostID {
		t.Errorf("file written to the root filesystem is owned by %d on the host, want %d", o, hostID)
	}
	// A file the host's root owns in the idmapped volume is root's inside.
	if err := os.WriteFile(filepath.Join(mapped, "from-host"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(execOut(t, d, ctr, "cat", "/mapped/from-host")); got != "x" {
		t.Errorf("root in the container reads %q from a 0600 host-root file in the idmapped volume", got)
	}
	// Through a plain bind mount it is not the host's root.
	if err := os.WriteFile(filepath.Join(plain, "secret"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"cat", "/plain/secret"}, Timeout: 10}); err != nil || r.ExitCode == 0 {
		t.Errorf("root in the container read a 0600 file of the host's root: %v %v", r, err)
	}

	// The keeper stays in the host's user namespace; the holder it forked
	// is in the pod's, which owns the pod's network, IPC, UTS and PID
	// namespaces.
	keeper := pausePID(ctx(t), d, pod)
	if keeper <= 0 {
		t.Fatal("no keeper PID in the pod status")
	}
	hostUserns := nsInode(t, "/proc/self/ns/user")
	if got := nsInode(t, fmt.Sprintf("/proc/%d/ns/user", keeper)); got != hostUserns {
		t.Errorf("the keeper is not in the host's user namespace")
	}
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", keeper, keeper))
	if err != nil {
		t.Fatal(err)
	}
	holder := 0
	for _, f := range strings.Fields(string(children)) {
		pid, _ := strconv.Atoi(f)
		if p := fmt.Sprintf("/proc/%d/ns/user", pid); pid > 0 && nsInode(t, p) != hostUserns {
			holder = pid
		}
	}
	if holder == 0 {
		t.Fatalf("no child of the keeper %d is in a user namespace of its own (children %q)", keeper, children)
	}
	podUserns := nsInode(t, fmt.Sprintf("/proc/%d/ns/user", holder))
	for _, ns := range []string{"net", "ipc", "uts"} {
		if got := ownerUserns(t, fmt.Sprintf("/proc/%d/ns/%s", keeper, ns)); got != podUserns {
			t.Errorf("the pod's %s namespace is not owned by its user namespace", ns)
		}
	}
	if got := ownerUserns(t, fmt.Sprintf("/proc/%d/ns/pid", holder)); got != podUserns {
		t.Errorf("the pod's PID namespace is not owned by its user namespace")
	}
	if data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", holder)); strings.Join(strings.Fields(string(data)), " ") != "0 300000 65536" {
		t.Errorf("holder uid_map = %q", data)
	}

	// A host-user pod in the same daemon is unchanged.
	hostPodCfg := podConfig("hostusers", logDir)
	hostPod := runPod(t, d, hostPodCfg).PodSandboxId
	hcfg := containerConfig("hostusers", image, "sleep", "300")
	hcfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/plain", HostPath: plain}}
	hctr := startContainer(t, d, hostPod, hostPodCfg, hcfg)
	if got := strings.Fields(execOut(t, d, hctr, "cat", "/proc/self/uid_map")); strings.Join(got, " ") != "0 0 4294967295" {
		t.Errorf("uid_map in a host-user container = %v", got)
	}
	execOut(t, d, hctr, "touch", "/plain/host-f")
	if o := fileOwner(t, filepath.Join(plain, "host-f")); o != 0 {
		t.Errorf("file written by a host-user container is owned by %d, want 0", o)
	}
	hostKeeper := pausePID(ctx(t), d, hostPod)
	if got := nsInode(t, fmt.Sprintf("/proc/%d/ns/user", hostKeeper)); got != hostUserns {
		t.Errorf("a host-user pod's keeper is in another user namespace")
	}

	// Removal leaves no holder, no rootfs bind and no pod files.
	if _, err := d.RT.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(holder, 0) == nil {
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", holder)); strings.Contains(string(cmdline), "pod-pause") {
			t.Errorf("the user namespace holder %d outlived its pod", holder)
		}
	}
	for _, dir := range []string{filepath.Join(d.State, "userns"), filepath.Join(d.State, "pods", pod)} {
		if m := mountsUnder(dir); len(m) > 0 {
			t.Errorf("mounts left under %s after removing the pod: %v", dir, m)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(d.State, "userns")); len(entries) > 0 {
		t.Errorf("rootfs bind points left: %v", entries)
	}
}

// TestUserNamespaceBadRequests checks the mappings and modes that
// containerd refuses are refused, with InvalidArgument, and leave nothing.
func TestUserNamespaceBadRequests(t *testing.T) {
	d, _ := readyDaemon(t)
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	one := func(c, h, l uint32) []*runtimeapi.IDMapping {
		return []*runtimeapi.IDMapping{{ContainerId: c, HostId: h, Length: l}}
	}
	two := append(one(0, 300000, 65536), one(0, 400000, 65536)...)
	for name, opts := range map[string]*runtimeapi.NamespaceOption{
		"two ranges":           {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: two, Gids: two}},
		"container 0 unmapped": {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(1, 300000, 65536), Gids: one(1, 300000, 65536)}},
		"no gids":              {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(0, 300000, 65536)}},
		"zero length":          {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(0, 300000, 0), Gids: one(0, 300000, 0)}},
		"past 32 bits":         {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(0, 4294967000, 65536), Gids: one(0, 4294967000, 65536)}},
		"host root":            {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: one(0, 0, 65536), Gids: one(0, 0, 65536)}},
		"mode CONTAINER":       {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}},
		"mode TARGET":          {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}},
		"host network":         {Network: runtimeapi.NamespaceMode_NODE, UsernsOptions: usernsOptions(300000)},
		"host PID":             {Pid: runtimeapi.NamespaceMode_NODE, UsernsOptions: usernsOptions(300000)},
		"NODE with ranges":     {UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: one(0, 300000, 65536), Gids: one(0, 300000, 65536)}},
	} {
		cfg := podConfig("bad-userns", filepath.Join(d.Dir, "logs"))
		cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: opts}
		_, err := d.RT.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: RunPodSandbox = %v, want InvalidArgument", name, err)
		}
	}
	pods, err := d.RT.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("refused pods left %d pod records", len(pods.Items))
	}
}

// TestUserNamespaceImageVolume checks that the directories peapod makes for
// an image's VOLUMEs in a mapped root filesystem belong to the pod's root.
func TestUserNamespaceImageVolume(t *testing.T) {
	regAddr, _ := testImage(t)
	testenv.PushImage(t, regAddr, "e2e-test-images/busybox:userns-vol", testenv.BusyboxRootfs(t), testenv.ImageConfig{
		Cmd: []string{"sh"}, Volumes: []string{"/data/sub"},
	})
	image := "registry.k8s.io/e2e-test-images/busybox:userns-vol"
	d := newDaemon(t, regAddr)
	d.Start()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("userns-vol", filepath.Join(d.Dir, "logs"))
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(300000)},
	}
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("vol", image, "sleep", "300"))
	if got := strings.Fields(execOut(t, d, ctr, "stat", "-c", "%u:%g", "/data", "/data/sub")); strings.Join(got, " ") != "0:0 0:0" {
		t.Errorf("owners of the VOLUME directories in the container = %v, want root", got)
	}
	execOut(t, d, ctr, "touch", "/data/sub/f")
}
