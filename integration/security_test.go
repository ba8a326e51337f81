package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// probeSource is a static helper put into the crafted image: each command
// tries one thing and prints "<what>: ok" or "<what>: <errno name>".
const probeSource = `#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void report(const char *what, long rc) {
	if (rc < 0)
		printf("%s: %s\n", what, strerrorname_np(errno));
	else
		printf("%s: ok\n", what);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	const char *cmd = argv[1];
	if (!strcmp(cmd, "ids")) {
		printf("uid=%d euid=%d\n", getuid(), geteuid());
		report("setuid0", setuid(0));
	} else if (!strcmp(cmd, "mount")) {
		report("mount", mount("none", "/tmp", "tmpfs", 0, ""));
	} else if (!strcmp(cmd, "module")) {
		int fd = open("/dev/null", O_RDONLY);
		report("finit_module", syscall(SYS_finit_module, fd, "", 0));
		report("init_module", syscall(SYS_init_module, NULL, 0, ""));
	} else if (!strcmp(cmd, "keyctl")) {
		report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
	} else if (!strcmp(cmd, "blockdev") && argc == 4) {
		char node[] = "/tmp/probe-dev";
		unlink(node);
		report("mknod", mknod(node, S_IFBLK | 0600, makedev(atoi(argv[2]), atoi(argv[3]))));
		report("open", open(node, O_RDONLY));
	} else if (!strcmp(cmd, "write") && argc == 3) {
		int fd = open(argv[2], O_WRONLY);
		report("open", fd);
		if (fd >= 0)
			report("write", write(fd, "1", 1));
	} else if (!strcmp(cmd, "readlen") && argc == 3) {
		int fd = open(argv[2], O_RDONLY);
		char buf[4096];
		long n = 0, r;
		while (fd >= 0 && (r = read(fd, buf, sizeof buf)) > 0 && n < (1 << 20))
			n += r;
		printf("len=%ld\n", n);
	} else {
		return 2;
	}
	return 0;
}
`

// securityImage builds the crafted image: busybox, the probe (also as a
// setuid-root copy), and symlinks that point at host files and directories.
func securityImage(t *testing.T, regAddr, canaryFile, canaryDir string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", testenv.BusyboxRootfs(t), root).CombinedOutput(); err != nil {
		t.Fatalf("copy busybox rootfs: %v: %s", err, out)
	}
	src := filepath.Join(t.TempDir(), "probe.c")
	if err := os.WriteFile(src, []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(root, "bin", "probe")
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", probe, src).CombinedOutput(); err != nil {
		t.Fatalf("build probe (gcc, libc6-dev): %v: %s", err, out)
	}
	if out, err := exec.Command("cp", probe, filepath.Join(root, "bin", "suid-probe")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := os.Chmod(filepath.Join(root, "bin", "suid-probe"), os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"shadowlink": "/etc/shadow",
		"canarylink": canaryFile,
		"hostdir":    canaryDir,
		"etclink":    "/etc",
		"uplink":     "../../../../../../..",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.PushImage(t, regAddr, "e2e-test-images/secprobe:it", root, testenv.ImageConfig{Cmd: []string{"sh"}})
	return "registry.k8s.io/e2e-test-images/secprobe:it"
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	return fmt.Sprintf("%x %v", sha256.Sum256(data), fi.ModTime())
}

func hostMountsAt(paths ...string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		for _, p := range paths {
			if len(f) > 4 && strings.HasPrefix(f[4], p) {
				out = append(out, line)
			}
		}
	}
	return out
}

// TestSecurity: what a default container cannot do, and that neither a
// crafted image's symlinks nor the log directory's reach host files.
func TestSecurity(t *testing.T) {
	regAddr, busybox := testImage(t)
	canaryDir := t.TempDir()
	canaryFile := filepath.Join(canaryDir, "canary")
	if err := os.WriteFile(canaryFile, []byte("canary\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	image := securityImage(t, regAddr, canaryFile, canaryDir)
	d := newDaemon(t, regAddr)
	d.Start()
	c := ctx(t)
	for _, ref := range []string{busybox, image} {
		if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatal(err)
		}
	}
	shadowBefore := fileDigest(t, "/etc/shadow")
	canaryBefore := fileDigest(t, canaryFile)

	logDir := t.TempDir()
	if err := os.Symlink(canaryFile, filepath.Join(logDir, "evil.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(logDir, "etc-link")); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("security", logDir)
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true} // for the privileged container
	pod := runPod(t, d, podCfg).PodSandboxId
	n := 0
	start := func(sec *runtimeapi.LinuxContainerSecurityContext, edit func(*runtimeapi.ContainerConfig)) string {
		t.Helper()
		n++
		cfg := containerConfig(fmt.Sprintf("c%d", n), image, "sleep", "1000")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: sec}
		if edit != nil {
			edit(cfg)
		}
		return startContainer(t, d, pod, podCfg, cfg)
	}
	exec := func(id string, cmd ...string) string {
		t.Helper()
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 20})
		if err != nil {
			t.Fatalf("exec %v: %v", cmd, err)
		}
		return string(r.Stdout) + string(r.Stderr)
	}
	expect := func(what, out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: %q does not contain %q", what, out, w)
			}
		}
	}
	runtimeDefault := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	def := start(&runtimeapi.LinuxContainerSecurityContext{Seccomp: runtimeDefault}, nil)

	t.Run("no host processes", func(t *testing.T) {
		out := exec(def, "sh", "-c", "ls /proc | grep -c '^[0-9]'; cat /proc/*/cmdline | tr '\\0' ' '")
		// The daemon's command line names its socket; the test's is ours.
		if strings.Contains(out, d.Socket) || strings.Contains(out, filepath.Base(os.Args[0])) {
			t.Errorf("the container sees host processes: %q", out)
		}
		if count, _ := strconv.Atoi(strings.SplitN(out, "\n", 2)[0]); count > 10 {
			t.Errorf("the container sees %d processes", count)
		}
	})
	t.Run("cannot mount", func(t *testing.T) {
		expect("mount", exec(def, "probe", "mount"), "mount: EPERM")
	})
	t.Run("cannot load kernel modules", func(t *testing.T) {
		expect("modules", exec(def, "probe", "module"), "finit_module: EPERM", "init_module: EPERM")
	})
	t.Run("masked and read-only paths", func(t *testing.T) {
		expect("kcore", exec(def, "probe", "readlen", "/proc/kcore"), "len=0")
		if _, err := os.Stat("/proc/sysrq-trigger"); err == nil {
			expect("sysrq-trigger", exec(def, "probe", "write", "/proc/sysrq-trigger"), "open: EROFS")
		}
		expect("core_pattern", exec(def, "probe", "write", "/proc/sys/kernel/core_pattern"), "open: EROFS")
		expect("sysfs", exec(def, "probe", "write", "/sys/kernel/mm/transparent_hugepage/enabled"), "open: EROFS")
		// The request's own lists replace the defaults.
		own := start(&runtimeapi.LinuxContainerSecurityContext{MaskedPaths: []string{"/proc/cpuinfo"}, ReadonlyPaths: []string{"/etc"}}, nil)
		expect("masked by request", exec(own, "probe", "readlen", "/proc/cpuinfo"), "len=0")
		expect("read-only by request", exec(own, "sh", "-c", "touch /etc/x 2>&1 || echo refused"), "refused")
	})
	t.Run("only its own devices", func(t *testing.T) {
		out := exec(def, "ls", "/dev")
		allowed := map[string]bool{"core": true, "fd": true, "full": true, "mqueue": true, "null": true, "ptmx": true, "pts": true,
			"random": true, "shm": true, "stderr": true, "stdin": true, "stdout": true, "tty": true, "urandom": true, "zero": true, "console": true}
		for _, name := range strings.Fields(out) {
			if !allowed[name] {
				t.Errorf("unexpected device /dev/%s in a default container", name)
			}
		}
		// CAP_MKNOD makes the node; the device cgroup refuses to open it.
		expect("loop0", exec(def, "probe", "blockdev", "7", "0"), "open: EPERM")
		withDev := start(nil, func(cfg *runtimeapi.ContainerConfig) {
			cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/extra-null", Permissions: "rw"}}
		})
		expect("kubelet device", exec(withDev, "sh", "-c", "echo x > /dev/extra-null && echo wrote"), "wrote")
		priv := start(&runtimeapi.LinuxContainerSecurityContext{Privileged: true}, nil)
		if got := len(strings.Fields(exec(priv, "ls", "/dev"))); got <= len(allowed) {
			t.Errorf("privileged container sees %d entries in /dev, want the host's", got)
		}
	})
	t.Run("setuid binary with no_new_privs", func(t *testing.T) {
		user := &runtimeapi.Int64Value{Value: 1000}
		nnp := start(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: user, NoNewPrivs: true}, nil)
		expect("no_new_privs", exec(nnp, "suid-probe", "ids"), "uid=1000 euid=1000", "setuid0: EPERM")
		// The control: without no_new_privs the same binary does become root.
		plain := start(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: user}, nil)
		expect("without no_new_privs", exec(plain, "suid-probe", "ids"), "euid=0")
	})
	t.Run("seccomp blocks keyctl", func(t *testing.T) {
		expect("RuntimeDefault", exec(def, "probe", "keyctl"), "keyctl: EPERM")
		unconfined := start(&runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}, nil)
		if out := exec(unconfined, "probe", "keyctl"); strings.Contains(out, "EPERM") {
			t.Errorf("Unconfined: %q, the control should reach the kernel", out)
		}
	})
	t.Run("image symlinks as mount destinations", func(t *testing.T) {
		payload := filepath.Join(t.TempDir(), "payload")
		os.WriteFile(payload, []byte("payload\n"), 0o644)
		volume := t.TempDir()
		id := start(nil, func(cfg *runtimeapi.ContainerConfig) {
			cfg.Mounts = []*runtimeapi.Mount{
				{HostPath: payload, ContainerPath: "/shadowlink"},
				{HostPath: payload, ContainerPath: "/canarylink"},
				{HostPath: volume, ContainerPath: "/hostdir/sub"},
				{HostPath: volume, ContainerPath: "/uplink/tmp/escaped"},
			}
		})
		out := exec(id, "sh", "-c", "echo pwned > /canarylink; echo pwned > /shadowlink; echo pwned > /hostdir/sub/f; cat /etc/shadow")
		if !strings.Contains(out, "pwned") {
			t.Errorf("the mount did not land inside the container: %q", out)
		}
		if got, _ := os.ReadFile(payload); !bytes.Contains(got, []byte("pwned")) {
			t.Errorf("writes did not reach the mount source: %q", got)
		}
		if entries, _ := os.ReadDir(canaryDir); len(entries) != 1 {
			t.Errorf("host directory behind the image's symlink changed: %v", entries)
		}
		if _, err := os.Stat("/tmp/escaped"); err == nil {
			t.Errorf("/tmp/escaped was created on the host")
		}
		if m := hostMountsAt(canaryDir, "/etc/shadow", "/tmp/escaped"); len(m) > 0 {
			t.Errorf("mounts on the host at the symlinks' targets: %v", m)
		}
	})
	t.Run("log path symlinks", func(t *testing.T) {
		for _, lp := range []string{"evil.log", "etc-link/peapod-evil.log"} {
			id := start(nil, func(cfg *runtimeapi.ContainerConfig) {
				cfg.LogPath = lp
				cfg.Command = []string{"sh", "-c", "echo pwned; sleep 1000"}
			})
			_ = id
		}
		time.Sleep(500 * time.Millisecond)
		if _, err := os.Stat("/etc/peapod-evil.log"); err == nil {
			os.Remove("/etc/peapod-evil.log")
			t.Errorf("a log was written to /etc through a symlink in the log directory")
		}
		data, _ := os.ReadFile(filepath.Join(logDir, canaryFile))
		if !strings.Contains(string(data), "pwned") {
			t.Errorf("the log did not land inside the log directory (%s): %q", filepath.Join(logDir, canaryFile), data)
		}
		cfg := containerConfig("escape", image, "true")
		cfg.LogPath = "../../../etc/shadow"
		_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
		if grpcCode(err) != "InvalidArgument" {
			t.Errorf("log path with ..: %v, want InvalidArgument", err)
		}
	})
	if got := fileDigest(t, canaryFile); got != canaryBefore {
		t.Errorf("canary file changed: %s -> %s", canaryBefore, got)
	}
	if got := fileDigest(t, "/etc/shadow"); got != shadowBefore {
		t.Errorf("/etc/shadow changed: %s -> %s", shadowBefore, got)
	}
}
