package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nsProbeSource tries to make a user namespace every way the kernel offers
// and prints what each returned.
const nsProbeSource = `
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/sched.h>

static void report(const char *what, long r) {
	if (r < 0) {
		printf("%s: %s\n", what, strerror(errno));
		return;
	}
	if (r == 0)
		_exit(0);
	waitpid(r, NULL, __WALL);
	printf("%s: ok\n", what);
}

int main(void) {
	report("clone-plain", syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
	report("clone-userns", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
	report("clone-netns", syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0));
	struct clone_args args;
	memset(&args, 0, sizeof(args));
	args.flags = CLONE_NEWUSER;
	args.exit_signal = SIGCHLD;
	report("clone3-userns", syscall(SYS_clone3, &args, sizeof(args)));
	long r = unshare(CLONE_NEWUSER);
	printf("unshare-userns: %s\n", r < 0 ? strerror(errno) : "ok");
	return 0;
}
`

// TestEscapeSeccompUserns: RuntimeDefault refuses unshare and setns to a
// container without CAP_SYS_ADMIN, but allowed clone and clone3 with
// CLONE_NEWUSER: any container could make a user namespace and hold every
// capability over it (the door of most unprivileged kernel exploits:
// netfilter, overlayfs, io_uring-era bugs), which docker's and
// containerd's default profiles close. Unconfined is the control: the
// kernel itself allows it here.
func TestEscapeSeccompUserns(t *testing.T) {
	if data, _ := os.ReadFile("/proc/sys/user/max_user_namespaces"); strings.TrimSpace(string(data)) == "0" {
		t.Skip("user namespaces are off on this host")
	}
	bin := filepath.Join(t.TempDir(), "nsprobe")
	src := bin + ".c"
	if err := os.WriteFile(src, []byte(nsProbeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build probe (gcc, libc6-dev): %v: %s", err, out)
	}
	d, image := readyDaemon(t)
	c := ctx(t)
	podCfg := podConfig("seccomp-userns", t.TempDir())
	run := runPod(t, d, podCfg)
	probe := func(name string, profile runtimeapi.SecurityProfile_ProfileType, caps ...string) map[string]string {
		cfg := containerConfig(name, image, "sleep", "1000")
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/nsprobe", HostPath: bin, Readonly: true}}
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			Seccomp:      &runtimeapi.SecurityProfile{ProfileType: profile},
			Capabilities: &runtimeapi.Capability{AddCapabilities: caps},
		}}
		id := startContainer(t, d, run.PodSandboxId, podCfg, cfg)
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"/nsprobe"}, Timeout: 30})
		if err != nil {
			t.Fatalf("%s: exec probe: %v", name, err)
		}
		got := map[string]string{}
		for _, l := range strings.Split(string(r.Stdout), "\n") {
			if k, v, ok := strings.Cut(l, ": "); ok {
				got[k] = v
			}
		}
		t.Logf("%s: %v (exit %d, %s)", name, got, r.ExitCode, r.Stderr)
		return got
	}
	unconfined := probe("unconfined", runtimeapi.SecurityProfile_Unconfined)
	if unconfined["clone-userns"] != "ok" {
		t.Skipf("the kernel refuses user namespaces to an unconfined container here (%v): nothing to filter", unconfined)
	}
	def := probe("default", runtimeapi.SecurityProfile_RuntimeDefault)
	if def["clone-plain"] != "ok" {
		t.Fatalf("RuntimeDefault broke a plain clone (fork): %v", def)
	}
	for _, k := range []string{"clone-userns", "clone-netns", "clone3-userns", "unshare-userns"} {
		if v, ok := def[k]; !ok || v == "ok" {
			t.Errorf("RuntimeDefault without CAP_SYS_ADMIN: %s = %q, want refused", k, v)
		}
	}
	// A container granted CAP_SYS_ADMIN may: the profile keys on it, as
	// for unshare.
	admin := probe("admin", runtimeapi.SecurityProfile_RuntimeDefault, "CAP_SYS_ADMIN")
	if admin["clone-userns"] != "ok" || admin["clone-plain"] != "ok" {
		t.Errorf("RuntimeDefault with CAP_SYS_ADMIN: %v, want clone with CLONE_NEWUSER allowed", admin)
	}
}
