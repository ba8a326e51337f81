package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/integration/testenv"
)

const crictlVersion = "v1.36.0"

var (
	crictlOnce sync.Once
	crictlPath string
	crictlErr  error
)

// buildCrictl builds crictl from sigs.k8s.io/cri-tools through the Go
// module proxy, once per machine (cached in testenv.CacheDir). cri-tools
// cannot be `go install`ed (its @v/list is refused), so a throwaway module
// requires it as a tool.
func buildCrictl(t *testing.T) string {
	t.Helper()
	crictlOnce.Do(func() {
		crictlPath = filepath.Join(testenv.CacheDir, "crictl-"+crictlVersion)
		if _, err := os.Stat(crictlPath); err == nil {
			return
		}
		work, err := os.MkdirTemp("", "crictl-build-")
		if err != nil {
			crictlErr = err
			return
		}
		defer os.RemoveAll(work)
		if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte("module peapod.test/crictl\n\ngo 1.26\n"), 0o644); err != nil {
			crictlErr = err
			return
		}
		tmp := crictlPath + ".tmp"
		for _, args := range [][]string{
			{"get", "-tool", "sigs.k8s.io/cri-tools/cmd/crictl@" + crictlVersion},
			{"build", "-trimpath", "-ldflags", "-X sigs.k8s.io/cri-tools/pkg/version.Version=" + strings.TrimPrefix(crictlVersion, "v"),
				"-o", tmp, "sigs.k8s.io/cri-tools/cmd/crictl"},
		} {
			cmd := exec.Command("go", args...)
			cmd.Dir = work
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				crictlErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
		crictlErr = os.Rename(tmp, crictlPath)
	})
	if crictlErr != nil {
		t.Fatalf("build crictl %s: %v", crictlVersion, crictlErr)
	}
	return crictlPath
}

// TestCrictl drives peapod with a stock crictl as a user would: pull, run a
// pod, create and start a container, read its logs, exec, stop and remove.
func TestCrictl(t *testing.T) {
	crictl := buildCrictl(t)
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	d.Start()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "crictl.yaml")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("crictl.yaml", fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 30\n", d.Socket))
	logDir := filepath.Join(dir, "logs")
	podJSON := write("pod.json", fmt.Sprintf(`{"metadata":{"name":"cli","namespace":"it","uid":"cli-uid"},"hostname":"cli-host","log_directory":%q,"linux":{}}`, logDir))
	ctrJSON := write("ctr.json", fmt.Sprintf(`{"metadata":{"name":"web"},"image":{"image":%q},"command":["sh","-c","echo from-crictl; exec sleep 1000"],"log_path":"web.log"}`, image))

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(crictl, append([]string{"--config", cfgPath}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
		return strings.TrimSpace(string(out))
	}

	if out := run("version"); !strings.Contains(out, "RuntimeName:  peapod") {
		t.Errorf("crictl version:\n%s", out)
	}
	run("pull", image)
	if out := run("images", "-q"); out == "" {
		t.Errorf("crictl images lists nothing after pull")
	}
	pod := run("runp", podJSON)
	ctr := run("create", pod, ctrJSON, podJSON)
	run("start", ctr)
	if out := run("ps", "-q", "--state", "running"); out != ctr {
		t.Errorf("crictl ps running = %q, want %q", out, ctr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(run("logs", ctr), "from-crictl") {
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs never showed the container's line")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := run("exec", "-s", ctr, "hostname"); out != "cli-host" {
		t.Errorf("crictl exec hostname = %q", out)
	}
	run("stop", "-t", "5", ctr)
	if out := run("inspect", "-o", "go-template", "--template", "{{.status.state}} {{.status.exitCode}}", ctr); out != "CONTAINER_EXITED 143" {
		t.Errorf("after crictl stop: %q", out)
	}
	run("rm", ctr)
	run("stopp", pod)
	run("rmp", pod)
	if out := run("pods", "-q"); out != "" {
		t.Errorf("pods left after rmp: %q", out)
	}
}
