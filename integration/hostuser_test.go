package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// An unprivileged user of the node is hostile: these tests try, as nobody,
// everything peapod keeps on the host for running pods.

const (
	nobodyUID = 65534
	// nobodyProbeEnv makes the test binary the probe that nobody runs
	// (init below), with one "path<TAB>pass" line per path on stdin.
	nobodyProbeEnv = "PEAPOD_TEST_NOBODY_PROBE"
)

func init() {
	if os.Getenv(nobodyProbeEnv) != "" {
		nobodyProbe(os.Stdin, os.Stdout)
		os.Exit(0)
	}
}

// nobodyProbe tries, with the ids it runs as, to reach each path and to
// list, read, write, execute or connect to it, and prints what worked. A
// path whose line says "pass" may be reached (its parent is a directory
// every user may pass through), but nothing may be done with it.
func nobodyProbe(in io.Reader, out io.Writer) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		p, pass, _ := strings.Cut(sc.Text(), "\t")
		st, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if pass != "pass" {
			fmt.Fprintf(out, "reach %s\n", p)
		}
		switch {
		case st.IsDir():
			if f, err := os.Open(p); err == nil {
				if _, err := f.Readdirnames(1); err == nil || errors.Is(err, io.EOF) {
					fmt.Fprintf(out, "list %s\n", p)
				}
				f.Close()
			}
			planted := filepath.Join(p, ".planted-by-nobody")
			if f, err := os.OpenFile(planted, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
				f.Close()
				os.Remove(planted)
				fmt.Fprintf(out, "write %s\n", p)
			}
		case st.Mode().IsRegular():
			if f, err := os.Open(p); err == nil {
				f.Close()
				fmt.Fprintf(out, "read %s\n", p)
			}
			if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil { // no O_TRUNC: nothing is changed
				f.Close()
				fmt.Fprintf(out, "write %s\n", p)
			}
			if unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS) == nil {
				fmt.Fprintf(out, "exec %s\n", p)
			}
		case st.Mode()&fs.ModeSocket != 0:
			if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
				c.Close()
				fmt.Fprintf(out, "connect %s\n", p)
			}
		}
	}
}

// nobodyCmd is cmd run as nobody, without supplementary groups.
func nobodyCmd(gid uint32, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: gid, Groups: []uint32{}}}
	return cmd
}

// probeAsNobody runs nobodyProbe as nobody over paths (true: may be
// reached) and returns what nobody could do.
func probeAsNobody(t *testing.T, paths map[string]bool) []string {
	t.Helper()
	// The test binary, where nobody can run it (go test's dir is 0700).
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := os.MkdirTemp("", "peapod-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(binDir, "probe")
	if out, err := exec.Command("cp", self, probe).CombinedOutput(); err != nil {
		t.Fatalf("copy the test binary: %v: %s", err, out)
	}
	if err := os.Chmod(probe, 0o755); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for p, pass := range paths {
		if pass {
			fmt.Fprintf(&in, "%s\tpass\n", p)
		} else {
			fmt.Fprintf(&in, "%s\n", p)
		}
	}
	cmd := nobodyCmd(nobodyUID, probe)
	cmd.Env = []string{nobodyProbeEnv + "=1"}
	cmd.Stdin = strings.NewReader(in.String())
	cmd.Dir = "/"
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe as nobody: %v", err)
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		if line != "" {
			got = append(got, line)
		}
	}
	sort.Strings(got)
	return got
}

// peapodPaths lists everything under the daemon's root and state, with
// whether nobody may reach it: only the entries of the directories that
// every user may pass through (the state directory and the parent of the
// user-namespaced containers' bind directories) may be reached. Mounts and
// image layers are not walked whole: their first entries and extra stand
// in for them.
func peapodPaths(t *testing.T, d *daemon, extra ...string) map[string]bool {
	t.Helper()
	passDirs := map[string]bool{d.Dir: true, d.State: true, filepath.Join(d.State, "userns"): true}
	paths := map[string]bool{}
	add := func(p string) { paths[p] = passDirs[filepath.Dir(p)] }
	for _, top := range []string{d.Root, d.State} {
		err := filepath.WalkDir(top, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed meanwhile
				}
				return err
			}
			add(p)
			if !e.IsDir() || p == top || (!isMountPointDir(p) && e.Name() != "diff" && e.Name() != "merged") {
				return nil
			}
			entries, _ := os.ReadDir(p)
			for i, c := range entries {
				if i == 20 {
					break
				}
				add(filepath.Join(p, c.Name()))
			}
			return fs.SkipDir
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range extra {
		if _, err := os.Lstat(p); err != nil {
			t.Fatalf("expected path %s: %v", p, err)
		}
		add(p)
	}
	return paths
}

func isMountPointDir(p string) bool {
	var st, parent unix.Stat_t
	return unix.Lstat(p, &st) == nil && unix.Lstat(filepath.Dir(p), &parent) == nil && st.Dev != parent.Dev
}

// bindOf is where on the host the container's root filesystem is bound
// for its user namespace (a mount point under the state directory whose
// path names the container).
func bindOf(t *testing.T, d *daemon, ctr string) string {
	t.Helper()
	for _, m := range mountsUnder(d.State) {
		if strings.Contains(m, ctr) {
			return m
		}
	}
	t.Fatalf("no mount of container %s under %s: %v", ctr, d.State, mountsUnder(d.State))
	return ""
}

// mountOptions is the per-mount options of the mount at path
// (/proc/self/mountinfo's sixth field).
func mountOptions(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var opts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == path {
			opts = strings.Split(f[5], ",") // the last mount there wins
		}
	}
	if opts == nil {
		t.Fatalf("%s is not in /proc/self/mountinfo", path)
	}
	return opts
}

// usernsDaemon starts a daemon whose test directory lets every user pass
// (so that only peapod's own modes keep nobody out), on directories left
// as an older peapod made them (0711, the legacy rootfs dir 0711), and
// tells whether it offers user namespaces.
func usernsDaemon(t *testing.T, regAddr string) (*daemon, bool) {
	d := newDaemon(t, regAddr)
	if err := os.Chmod(d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{d.Root, filepath.Join(d.State, "pods"), filepath.Join(d.State, "containers"),
		filepath.Join(d.State, "k"), filepath.Join(d.State, "runc"), filepath.Join(d.State, "rootfs")} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	d.Start()
	st, err := d.RT.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return d, len(st.RuntimeHandlers) > 0 && st.RuntimeHandlers[0].GetFeatures().GetUserNamespaces()
}

func pull(t *testing.T, d *daemon, image string) {
	t.Helper()
	if _, err := d.Img.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
}

// TestHostUserCannotReachPods runs a pod of each shape — plain (with an
// exited container, so that its exit file exists), one whose non-root
// container uses /dev/shm, and a user-namespaced one — and has nobody try
// to list, read, write, execute and connect to everything under peapod's
// root and state: all of it is refused.
func TestHostUserCannotReachPods(t *testing.T) {
	regAddr, image := testImage(t)
	d, userns := usernsDaemon(t, regAddr)
	pull(t, d, image)
	logDir := filepath.Join(d.Dir, "logs")
	var extra []string

	// Plain.
	plainCfg := podConfig("hostuser-plain", logDir)
	plain := runPod(t, d, plainCfg).PodSandboxId
	startContainer(t, d, plain, plainCfg, containerConfig("sleeper", image, "sleep", "300"))
	done := startContainer(t, d, plain, plainCfg, containerConfig("done", image, "true"))
	waitFor(t, 20*time.Second, "container to exit", func() bool {
		return containerStatus(t, d, done).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	extra = append(extra, filepath.Join(d.State, "containers", done, "exit"))

	// /dev/shm in use by a container user that is not root: the file it
	// writes with the default umask is readable by all inside the pod.
	shmCfg := podConfig("hostuser-shm", logDir)
	shmPod := runPod(t, d, shmCfg).PodSandboxId
	shmCtrCfg := containerConfig("shm", image, "sh", "-c", "echo secret > /dev/shm/secret && sleep 300")
	shmCtrCfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 1000},
	}}
	shmCtr := startContainer(t, d, shmPod, shmCfg, shmCtrCfg)
	waitFor(t, 20*time.Second, "the container to write /dev/shm/secret", func() bool {
		r, err := d.RT.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: shmCtr, Cmd: []string{"cat", "/dev/shm/secret"}, Timeout: 10})
		return err == nil && r.ExitCode == 0 && strings.TrimSpace(string(r.Stdout)) == "secret"
	})
	// Users other than root still share the pod's /dev/shm.
	execOut(t, d, shmCtr, "sh", "-c", "echo more > /dev/shm/more && test -O /dev/shm/more && rm /dev/shm/more")
	shmFile := filepath.Join(d.State, "pods", shmPod, "shm", "secret")
	if st, err := os.Stat(shmFile); err != nil || st.Mode().Perm()&0o004 == 0 {
		t.Fatalf("the container's /dev/shm/secret on the host: %v %v; want a world-readable file for the test to mean something", st, err)
	}
	extra = append(extra, shmFile)

	// User-namespaced, its root writing to its root filesystem and /dev/shm.
	if userns {
		uCfg := podConfig("hostuser-userns", logDir)
		uCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(400000)},
		}
		uPod := runPod(t, d, uCfg).PodSandboxId
		cfg := containerConfig("userns", image, "sleep", "300")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: uCfg.Linux.SecurityContext.NamespaceOptions,
		}}
		uCtr := startContainer(t, d, uPod, uCfg, cfg)
		execOut(t, d, uCtr, "sh", "-c", "echo secret > /tmp/secret && chmod 644 /tmp/secret && echo secret > /dev/shm/secret")
		bind := bindOf(t, d, uCtr)
		extra = append(extra, filepath.Join(bind, "tmp", "secret"), filepath.Join(bind, "bin", "busybox"),
			filepath.Join(bind, "tmp"), filepath.Join(d.State, "pods", uPod, "shm", "secret"))
	} else {
		t.Log("no user namespaces here: the user-namespaced shape is not tried")
	}

	paths := peapodPaths(t, d, extra...)
	// The walk must have found each pod's and container's places.
	for _, id := range []string{plain, shmPod} {
		if _, ok := paths[filepath.Join(d.State, "pods", id, "shm")]; !ok {
			t.Errorf("the walk missed the shm of pod %s", id)
		}
	}
	for _, p := range []string{filepath.Join(d.State, "containers", done, "config.json"),
		filepath.Join(d.State, "containers", shmCtr, "config.json"), filepath.Join(d.State, "runc", shmCtr)} {
		if _, ok := paths[p]; !ok {
			t.Errorf("the walk missed %s", p)
		}
	}
	t.Logf("nobody tries %d paths", len(paths))
	if got := probeAsNobody(t, paths); len(got) > 0 {
		t.Errorf("as nobody on the host, %d things worked under peapod's root and state:\n%s", len(got), strings.Join(got, "\n"))
	}

	// Every mount peapod made for the pods on the host is nosuid and nodev
	// but the image store's (under the 0700 root), whose flags the
	// containers' own root filesystems inherit: they keep their setuid
	// programs, and the device nodes the device cgroup allows.
	storage := filepath.Join(d.Root, "storage") + "/"
	for _, m := range mountsUnder(d.Dir) {
		if opts := mountOptions(t, m); !strings.HasPrefix(m, storage) && (!contains(opts, "nodev") || !contains(opts, "nosuid")) {
			t.Errorf("mount %s has options %v", m, opts)
		}
	}
}

// TestHostUserSetuidBinary: a user-namespaced container's image holds a
// setuid binary, owned on the host by the pod's mapped root. No host user
// other than root can run it: its path is refused to nobody, and where the
// path is open (a user in the mapped root's group) the host's bind is
// nosuid, so it runs without the mapped root's uid. In the container the
// binary still works.
func TestHostUserSetuidBinary(t *testing.T) {
	regAddr, image := testImage(t)
	suidImage := pushSetuidImage(t, regAddr)
	d, userns := usernsDaemon(t, regAddr)
	if !userns {
		t.Skip("the daemon does not offer user namespaces here (see its log)")
	}
	pull(t, d, image)
	pull(t, d, suidImage)

	const hostID = 500000
	podCfg := podConfig("hostuser-suid", filepath.Join(d.Dir, "logs"))
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: usernsOptions(hostID)},
	}
	pod := runPod(t, d, podCfg).PodSandboxId
	cfg := containerConfig("suid", suidImage, "sleep", "300")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions,
		RunAsUser:        &runtimeapi.Int64Value{Value: 1000},
	}}
	ctr := startContainer(t, d, pod, podCfg, cfg)

	// In the container the setuid binary makes its user the pod's root.
	if got := strings.TrimSpace(execOut(t, d, ctr, "/suid-euid")); got != "euid=0" {
		t.Errorf("the setuid binary in the container as uid 1000 prints %q, want euid=0", got)
	}

	bin := filepath.Join(bindOf(t, d, ctr), "suid-euid")
	var st syscall.Stat_t
	if err := syscall.Stat(bin, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != hostID || st.Mode&syscall.S_ISUID == 0 {
		t.Fatalf("%s: owner %d mode %o; want the mapped root %d, setuid", bin, st.Uid, st.Mode, hostID)
	}
	// nobody cannot reach it.
	out, err := nobodyCmd(nobodyUID, bin).CombinedOutput()
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("nobody ran %s: %v, output %q; want permission denied", bin, err, out)
	}
	// A host user whom the path lets through, in the mapped root's group,
	// runs it as itself only.
	out, err = nobodyCmd(hostID, bin).CombinedOutput()
	if err == nil && strings.TrimSpace(string(out)) != fmt.Sprintf("euid=%d", nobodyUID) {
		t.Errorf("a host user of the mapped root's group ran %s as %q, want its own euid %d", bin, strings.TrimSpace(string(out)), nobodyUID)
	}
	opts := mountOptions(t, filepath.Dir(bin))
	for _, want := range []string{"nosuid", "nodev"} {
		if !contains(opts, want) {
			t.Errorf("the host's bind of the container's root filesystem at %s has options %v, want %s", filepath.Dir(bin), opts, want)
		}
	}
}

// pushSetuidImage pushes busybox with /suid-euid, a static program that
// prints its effective uid, setuid root.
func pushSetuidImage(t *testing.T, regAddr string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is needed to build the setuid program")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "euid.c")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"euid=%d\\n\", (int)geteuid()); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t), rootfs).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox: %v: %s", err, out)
	}
	bin := filepath.Join(rootfs, "suid-euid")
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Skipf("gcc -static: %v: %s", err, out)
	}
	if err := os.Chmod(bin, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	testenv.PushImage(t, regAddr, "e2e-test-images/suid:it", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}})
	return "registry.k8s.io/e2e-test-images/suid:it"
}
