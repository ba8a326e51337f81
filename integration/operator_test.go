package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// operatorConfig is a config file with every path of d, so the daemon runs
// with --config alone (flags would win over the file on reload).
func operatorConfig(d *daemon, extra string) string {
	return fmt.Sprintf(`socket = %q
root = %q
state = %q
cgroup_parent = %q
registries_conf = %q
bridge = %q
pod_cidr = %q
cni_conf_dir = %q
nri_socket = %q
%s`, d.Socket, d.Root, d.State, d.CgroupParent, d.RegistriesConf, d.Bridge, d.PodCIDR, d.CNIConfDir, d.NRISocket, extra)
}

// startWithConfig starts d with only --config path, as a systemd unit does.
func startWithConfig(t *testing.T, d *daemon, path string) {
	t.Helper()
	d.StartArgs("--config", path)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readLog(t *testing.T, d *daemon) string {
	data, err := os.ReadFile(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestSIGHUPReload: SIGHUP applies a new log level from the config file,
// reports a changed key that needs a restart as ignored, and leaves the
// running pod and container alone.
func TestSIGHUPReload(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	cfgPath := filepath.Join(d.Dir, "peapod.toml")
	writeFile(t, cfgPath, operatorConfig(d, "log_level = \"info\"\n"))
	startWithConfig(t, d, cfgPath)
	c := ctx(t)
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		t.Fatal(err)
	}
	podCfg := podConfig("reload", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("sleeper", image, "sleep", "1000"))
	pidBefore, pauseBefore := containerPID(t, d, ctr), pausePID(c, d, pod)

	// At info, reads are not logged; mutations are, with names.
	if _, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{}); err != nil {
		t.Fatal(err)
	}
	log := readLog(t, d)
	if strings.Contains(log, "method=ListContainers") {
		t.Fatalf("ListContainers logged at info level:\n%s", tail(log, 20))
	}
	if !strings.Contains(log, "msg=StartContainer") || !strings.Contains(log, "pod=it/reload") ||
		!strings.Contains(log, "container=sleeper") || !strings.Contains(log, "request_id=") {
		t.Fatalf("no info line for StartContainer with pod and container names:\n%s", tail(log, 20))
	}

	// debug, and a changed key that needs a restart.
	writeFile(t, cfgPath, operatorConfig(d, "log_level = \"debug\"\npull_progress_timeout = \"1m\"\n"))
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload to be logged", func() bool {
		return strings.Contains(readLog(t, d), "SIGHUP: config reloaded")
	})
	log = readLog(t, d)
	for _, want := range []string{
		`msg="log level changed" from=info to=debug`,
		`applied=[log_level]`,
		`msg="SIGHUP: changed keys need a restart of peapod to take effect; ignored" keys=[pull_progress_timeout]`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, tail(log, 10))
		}
	}
	if _, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a debug line for ListContainers", func() bool {
		return strings.Contains(readLog(t, d), "method=ListContainers")
	})

	// Same daemon, same pod and container processes.
	if pid := containerPID(t, d, ctr); pid != pidBefore || syscall.Kill(pid, 0) != nil {
		t.Errorf("container PID %d after reload, was %d (alive: %v)", pid, pidBefore, syscall.Kill(pid, 0) == nil)
	}
	if p := pausePID(c, d, pod); p != pauseBefore || syscall.Kill(p, 0) != nil {
		t.Errorf("pause PID %d after reload, was %d", p, pauseBefore)
	}

	// A bad file is refused whole; the running config stays.
	writeFile(t, cfgPath, operatorConfig(d, "log_level = \"loud\"\n"))
	d.Cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the refusal to be logged", func() bool {
		return strings.Contains(readLog(t, d), "SIGHUP: config not reloaded")
	})
	if _, err := d.RT.Version(c, &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("daemon gone after a bad reload: %v", err)
	}
}

func freeTCPAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads the metrics endpoint with Prometheus' own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the sample of family name whose labels
// include want (a counter, gauge, or a histogram's count); -1 when absent.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetricsEndpoint: after a pod lifecycle, the endpoint serves every
// listed metric with the values that lifecycle must have produced.
func TestMetricsEndpoint(t *testing.T) {
	regAddr, image := testImage(t)
	d := newDaemon(t, regAddr)
	addr := freeTCPAddr(t)
	d.Args = []string{"--metrics-address", addr, "--log-format", "json"}
	d.Start()
	c := ctx(t)
	var header metadata.MD
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if ids := header.Get("peapod-request-id"); len(ids) != 1 || len(ids[0]) != 12 {
		t.Errorf("request ID header: %v", ids)
	}
	podCfg := podConfig("metrics", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("app", image, "sleep", "1000"))

	// One streaming session.
	ex, err := d.RT.Exec(c, &runtimeapi.ExecRequest{ContainerId: ctr, Cmd: []string{"true"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := executor(t, ex.Url).StreamWithContext(c, remotecommand.StreamOptions{Stdout: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	// A container the OOM killer ends (as TestOOMKilled).
	hogCfg := containerConfig("hog", image, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M")
	hogCfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}}
	hog := startContainer(t, d, pod, podCfg, hogCfg)
	waitFor(t, 20*time.Second, "the hog to be OOM-killed", func() bool {
		st, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: hog})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	// A request for something that does not exist: NotFound.
	if _, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: strings.Repeat("ab", 32)}); err == nil {
		t.Fatal("status of a missing container succeeded")
	}

	fams := scrape(t, addr)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		min    float64
		max    float64 // -1: no maximum
	}{
		{"peapod_cri_requests_total", map[string]string{"method": "RunPodSandbox", "code": "OK"}, 1, 1},
		{"peapod_cri_requests_total", map[string]string{"method": "StartContainer", "code": "OK"}, 2, 2},
		{"peapod_cri_requests_total", map[string]string{"method": "ContainerStatus", "code": "NotFound"}, 1, 1},
		{"peapod_cri_request_duration_seconds", map[string]string{"method": "PullImage", "code": "OK"}, 1, 1},
		{"peapod_image_pull_bytes_total", nil, 1000, -1},
		{"peapod_image_pull_duration_seconds", map[string]string{"result": "success"}, 1, 1},
		{"peapod_pods", map[string]string{"state": "ready"}, 1, 1},
		{"peapod_containers", map[string]string{"state": "running"}, 1, 1},
		{"peapod_pod_network_setup_duration_seconds", map[string]string{"result": "success"}, 1, 1},
		{"peapod_streaming_sessions_total", map[string]string{"kind": "exec"}, 1, 1},
		{"peapod_streaming_sessions_active", map[string]string{"kind": "exec"}, 0, 0},
		{"peapod_containers", map[string]string{"state": "exited"}, 1, 1},
		{"peapod_container_oom_kills_total", nil, 1, 1},
	} {
		v := metricValue(fams, tc.name, tc.labels)
		if v < tc.min || (tc.max >= 0 && v > tc.max) {
			t.Errorf("%s%v = %v, want [%v, %v] (-1: absent)", tc.name, tc.labels, v, tc.min, tc.max)
		}
	}
	if f := fams["peapod_cri_request_duration_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("peapod_cri_request_duration_seconds is not a histogram: %v", f)
	}

	// The rest of the lifecycle moves the state gauges.
	if _, err := d.RT.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, addr)
	if v := metricValue(fams, "peapod_pods", map[string]string{"state": "notready"}); v != 1 {
		t.Errorf("pods notready after stop = %v, want 1", v)
	}
	if v := metricValue(fams, "peapod_containers", map[string]string{"state": "exited"}); v != 2 {
		t.Errorf("containers exited after stop = %v, want 2", v)
	}
	if _, err := d.RT.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, addr)
	if v := metricValue(fams, "peapod_pods", map[string]string{"state": "notready"}); v != 0 {
		t.Errorf("pods notready after remove = %v, want 0", v)
	}
	if v := metricValue(fams, "peapod_cri_requests_total", map[string]string{"method": "RemovePodSandbox", "code": "OK"}); v != 1 {
		t.Errorf("RemovePodSandbox OK = %v, want 1", v)
	}

	// JSON logs: one object per line, the mutation with its names.
	found := false
	for _, line := range strings.Split(strings.TrimSpace(readLog(t, d)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] == "RunPodSandbox" && rec["pod"] == "it/metrics" && rec["pod_id"] == pod && rec["request_id"] != nil {
			found = true
		}
	}
	if !found {
		t.Errorf("no JSON info line for RunPodSandbox of it/metrics")
	}
}

// TestVerboseStatus: crictl info / inspect / inspectp material.
func TestVerboseStatus(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	st, err := d.RT.Status(c, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(st.Info["config"]), &cfg); err != nil {
		t.Fatalf("config %q: %v", st.Info["config"], err)
	}
	if cfg["socket"] != d.Socket || cfg["log_level"] != "debug" || cfg["pull_progress_timeout"] == nil {
		t.Errorf("effective config: %v", cfg)
	}
	var rt map[string]any
	if err := json.Unmarshal([]byte(st.Info["runtime"]), &rt); err != nil || rt["network"] != "builtin" || rt["streamingAddress"] == "" {
		t.Errorf("runtime info %q: %v", st.Info["runtime"], err)
	}

	podCfg := podConfig("verbose", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	ctr := startContainer(t, d, pod, podCfg, containerConfig("app", image, "sleep", "1000"))
	cs, err := d.RT.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ctr, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var ci struct {
		Pid         int
		SandboxID   string
		Bundle      string
		Rootfs      string
		LogPath     string
		CgroupsPath string
		RuntimeSpec struct {
			Process struct{ Args []string }
		}
	}
	if err := json.Unmarshal([]byte(cs.Info["info"]), &ci); err != nil {
		t.Fatal(err)
	}
	if ci.Pid == 0 || ci.SandboxID != pod || ci.Bundle == "" || ci.Rootfs == "" || ci.LogPath == "" ||
		!strings.Contains(ci.CgroupsPath, d.CgroupParent) || strings.Join(ci.RuntimeSpec.Process.Args, " ") != "sleep 1000" {
		t.Errorf("container verbose info: %+v", ci)
	}
	ps, err := d.RT.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var pi struct {
		Pid    int
		Netns  string
		PodDir string
		IPs    []string
	}
	if err := json.Unmarshal([]byte(ps.Info["info"]), &pi); err != nil || pi.Pid == 0 || pi.Netns == "" || pi.PodDir == "" || len(pi.IPs) == 0 {
		t.Errorf("pod verbose info %s: %v", ps.Info["info"], err)
	}
}

// TestConfigCommands: `peapod config default` output passes `peapod config
// check`, and a broken file fails it with the line.
func TestConfigCommands(t *testing.T) {
	out, err := exec.Command(peapodBinary, "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "peapod.toml")
	writeFile(t, path, string(out))
	if out, err := exec.Command(peapodBinary, "config", "check", path).CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("check of the default: %v: %s", err, out)
	}
	writeFile(t, path, "root = \"/x\"\nsoket = \"/s\"\nlog_level = \"loud\"\n")
	out, err = exec.Command(peapodBinary, "config", "check", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), path+`:2: unknown key "soket"`) {
		t.Fatalf("check of a bad file: %v: %s", err, out)
	}
	// The daemon refuses it the same way.
	out, err = exec.Command(peapodBinary, "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `:2: unknown key "soket"`) {
		t.Fatalf("daemon with a bad file: %v: %s", err, out)
	}
}
