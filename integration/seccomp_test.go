package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestSeccomp: RuntimeDefault filters, Localhost profiles block what they
// say, Unconfined and privileged containers run unfiltered.
func TestSeccomp(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	profile := filepath.Join(t.TempDir(), "no-chmod.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("seccomp", t.TempDir())
	podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true} // for the privileged container
	run := runPod(t, d, podCfg)
	start := func(name string, sec *runtimeapi.LinuxContainerSecurityContext) string {
		cfg := containerConfig(name, image, "sleep", "1000")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: sec}
		cr, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if _, err := d.RT.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		return cr.ContainerId
	}
	exec := func(id string, cmd ...string) (string, int32) {
		r, err := d.RT.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd})
		if err != nil {
			t.Fatalf("exec %v: %v", cmd, err)
		}
		return string(r.Stdout) + string(r.Stderr), r.ExitCode
	}
	seccompMode := func(id string) string {
		out, _ := exec(id, "grep", "^Seccomp:", "/proc/self/status")
		return strings.TrimSpace(strings.TrimPrefix(out, "Seccomp:"))
	}
	localhost := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: profile}

	def := start("default", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}})
	if m := seccompMode(def); m != "2" {
		t.Errorf("RuntimeDefault: Seccomp mode %q, want 2 (filter)", m)
	}
	local := start("local", &runtimeapi.LinuxContainerSecurityContext{Seccomp: localhost})
	if out, code := exec(local, "chmod", "400", "/tmp"); code == 0 || !strings.Contains(out, "not permitted") {
		t.Errorf("chmod under a profile that blocks it: exit %d, %q", code, out)
	}
	if _, code := exec(def, "chmod", "700", "/tmp"); code != 0 {
		t.Errorf("chmod under RuntimeDefault failed (exit %d)", code)
	}
	unconfined := start("unconfined", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}})
	if m := seccompMode(unconfined); m != "0" {
		t.Errorf("Unconfined: Seccomp mode %q, want 0", m)
	}
	priv := start("privileged", &runtimeapi.LinuxContainerSecurityContext{Privileged: true, Seccomp: localhost})
	if m := seccompMode(priv); m != "0" {
		t.Errorf("privileged: Seccomp mode %q, want 0 (profiles do not apply)", m)
	}

	cfg := containerConfig("missing", image, "true")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/no/such/profile.json"}}}
	_, err := d.RT.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: podCfg})
	if grpcCode(err) != "InvalidArgument" || !strings.Contains(err.Error(), "/no/such/profile.json") {
		t.Errorf("missing localhost profile: %v, want InvalidArgument naming it", err)
	}
}
