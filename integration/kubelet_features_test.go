package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestKubeletFeatures checks the runtime features Kubernetes 1.36/1.37
// asks of a node (issue #22) through the stock kubelet, and through crictl
// where no kubelet path exists here:
//
//   - image volumes (KEP-4639, GA and locked on since 1.36: no feature
//     gate to set): a static pod mounts an image and reads its files, whole
//     and by subPath;
//   - runtimeClassName: a standalone kubelet has no RuntimeClass manager,
//     and a static pod naming a class crashes it (a nil
//     *runtimeclass.Manager in a non-nil interface, kuberuntime/util
//     NamespacesForPod; kubernetes/kubernetes#125561): one check pins that
//     down on a kubelet of its own; another gives a kubelet a real API
//     server (etcd + kube-apiserver on loopback, controlplane_test.go)
//     holding the RuntimeClass, and the static pod runs on the external
//     runc handler; crictl --runtime runs a pod there too;
//   - CDI devices (a spec the test writes: /dev/null as /dev/cdi-null, an
//     env var, a read-only mount): the kubelet asks for them through DRA (a
//     scheduler-allocated ResourceClaim, which static pods cannot use) or a
//     device plugin's allocation: a device plugin of the test's
//     (deviceplugin_test.go) hands the kubelet the CDI device for a static
//     pod's resource limit; crictl also creates a container whose config
//     carries CDI_devices.
//
// The phases run one after the other on one peapod, each kubelet gone
// before the next starts (they share the device-plugin socket path), and
// crictl's last (a running kubelet kills the pods it finds in its runtime
// that are not its own). Not part of `make e2e-kubelet` (what CI runs):
// `make e2e-kubelet-features` builds the binaries (cached) and runs this
// with PEAPOD_KUBELET set. PEAPOD_EXTERNAL_RUNTIME names another runtime
// binary for the external handler, PEAPOD_KUBELET_FEATURES_FOCUS (a
// regexp of check names) runs only some checks:
// integration/oci-handlers-v2.sh runs the runtimeClassName one on crun in
// the cgroup v2 guest.
func TestKubeletFeatures(t *testing.T) {
	bin := os.Getenv("PEAPOD_KUBELET")
	if bin == "" {
		t.Skip("PEAPOD_KUBELET is not set: run `make e2e-kubelet-features`")
	}
	ext := externalRuntimeOf(t)
	focus, err := regexp.Compile(os.Getenv("PEAPOD_KUBELET_FEATURES_FOCUS"))
	if err != nil {
		t.Fatalf("PEAPOD_KUBELET_FEATURES_FOCUS: %v", err)
	}
	setup := time.Now()
	reg := testenv.StartRegistry(t)
	testenv.PushImage(t, reg, "e2e-kubelet/busybox:1", testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	pushVolumeData(t, reg)
	pulls := startPullCounter(t, reg)

	// The node: the CDI spec of vendor.test/dev=null and the external
	// handler configured.
	specs := t.TempDir()
	cdiDir := filepath.Join(specs, "cdi")
	writeNullCDISpec(t, cdiDir, filepath.Join(specs, "cdi-shared"))
	// Made before the daemon, so removed after it (cleanups run last
	// first): the daemon's teardown ends what the kubelets left.
	cgRoot := makeCgroupRoot(t)
	o := daemonOptions(t, pulls.addr)
	o.Config = fmt.Sprintf("cdi_spec_dirs = [%q]\n[runtime_handlers.%s]\nruntime = \"oci\"\npath = %q\n", cdiDir, ext.handler, ext.path)
	d := &daemon{testenv.NewDaemon(t, o.WithNodeEnv())}
	d.Start()
	newKubelet := func(t *testing.T, args ...string) *kubeletEnv {
		var podLogs string
		hostPaths(t, func() string { return podLogs })
		e := &kubeletEnv{pulls: pulls, cgroupRoot: cgRoot, rt: d.RT, img: d.Img, stateDirs: []string{d.Root, d.State}}
		e.k = startKubelet(t, bin, d.Socket, cgRoot, args...)
		podLogs = e.k.podLogs
		return e
	}
	setupTime := time.Since(setup)

	r := &checkRecorder{focus: focus}
	var e *kubeletEnv
	r.phase(t, "kubelet", func(t *testing.T) { e = newKubelet(t) },
		featureCheck{"kubelet: image volume, whole and subPath", func(t *testing.T) { checkImageVolume(t, e) }})
	r.phase(t, "kubelet-runtimeclass", func(t *testing.T) { e = newKubelet(t) },
		featureCheck{"kubelet: runtimeClassName standalone crashes", func(t *testing.T) { checkRuntimeClassStandalone(t, e, ext) }})
	var cp *controlPlane
	r.phase(t, "kubelet-apiserver", func(t *testing.T) {
		// A real API server holding the RuntimeClass (and the namespace
		// of the static pods' mirror pods).
		cp = startControlPlane(t)
		for path, obj := range map[string]string{
			"/api/v1/namespaces":                  fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, e2eNamespace),
			"/apis/node.k8s.io/v1/runtimeclasses": fmt.Sprintf(`{"apiVersion":"node.k8s.io/v1","kind":"RuntimeClass","metadata":{"name":%q},"handler":%q}`, ext.handler, ext.handler),
		} {
			if _, err := cp.request("POST", path, []byte(obj)); err != nil {
				t.Fatal(err)
			}
		}
		e = newKubelet(t, "--kubeconfig", cp.kubeconfig)
	},
		featureCheck{"kubelet+apiserver: runtimeClassName on " + ext.name(), func(t *testing.T) { checkRuntimeClass(t, e, d, ext) }},
		featureCheck{"kubelet+apiserver: CDI device of a device plugin", func(t *testing.T) { checkDevicePluginCDI(t, e, cp) }},
	)
	cli := &crictlNode{d: d, dir: t.TempDir(), ext: ext}
	r.phase(t, "crictl", func(t *testing.T) {
		cli.bin = buildCrictl(t)
		cli.configure(t)
	},
		featureCheck{"crictl: pod on the external " + ext.name() + " handler", cli.checkExternalHandler},
		featureCheck{"crictl: container with CDI_devices", cli.checkCDIDevices},
	)
	if r.want == 0 {
		t.Fatalf("PEAPOD_KUBELET_FEATURES_FOCUS=%q names none of the checks", focus)
	}
	failed := 0
	var b strings.Builder
	fmt.Fprintf(&b, "\nkubelet features (kubelet %s on peapod, external handler %s = %s; setup %.1fs)\n", kubeletVersion(bin), ext.handler, ext.path, setupTime.Seconds())
	fmt.Fprintf(&b, "%-48s %-6s %8s\n", "check", "result", "time")
	for _, r := range r.results {
		res := "PASS"
		if !r.ok {
			res, failed = "FAIL", failed+1
		}
		fmt.Fprintf(&b, "%-48s %-6s %7.1fs\n", r.name, res, r.took.Seconds())
	}
	fmt.Fprintf(&b, "kubelet features: %d passed, %d failed, total %.1fs\n", len(r.results)-failed, failed, time.Since(setup).Seconds())
	fmt.Print(b.String())
	// A check that never reported (its phase's setup failed) is no pass.
	if passed := len(r.results) - failed; passed != r.want {
		t.Errorf("kubelet features: %d of %d checks passed", passed, r.want)
	}
}

type featureCheck struct {
	name string
	run  func(*testing.T)
}

// checkRecorder runs checks and keeps their results in the order run.
// With a focus (PEAPOD_KUBELET_FEATURES_FOCUS), only the checks whose name
// it matches run, and a phase none of whose checks do is not set up.
type checkRecorder struct {
	focus   *regexp.Regexp
	want    int // the checks that ran or were meant to
	mu      sync.Mutex
	results []checkResult
}

// phase sets up a phase (a kubelet, an API server) and runs its focused
// checks in parallel; a setup that fails leaves them unreported (no pass).
func (r *checkRecorder) phase(t *testing.T, name string, setup func(*testing.T), checks ...featureCheck) {
	var focused []featureCheck
	for _, c := range checks {
		if r.focus.MatchString(c.name) {
			focused = append(focused, c)
		}
	}
	if len(focused) == 0 {
		return
	}
	r.want += len(focused)
	t.Run(name, func(t *testing.T) {
		setup(t)
		r.parallel(t, focused...)
	})
}

// parallel runs checks in parallel and returns when all are done.
func (r *checkRecorder) parallel(t *testing.T, checks ...featureCheck) {
	t.Run("checks", func(t *testing.T) {
		for _, c := range checks {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				begin := time.Now()
				defer func() {
					r.mu.Lock()
					r.results = append(r.results, checkResult{len(r.results), c.name, !t.Failed(), time.Since(begin)})
					r.mu.Unlock()
				}()
				c.run(t)
			})
		}
	})
}

// externalRuntime is the OCI runtime binary the external handler (both
// nodes') maps to, and the handler's name: Debian's runc on this host;
// PEAPOD_EXTERNAL_RUNTIME names another, as integration/oci-handlers-v2.sh
// does with crun in the cgroup v2 guest (crun 1.8 refuses this host's
// hybrid cgroup layout: TestOCIRuntimeHandler).
type externalRuntime struct{ path, handler string }

// name is the runtime's binary name ("runc", "crun").
func (x externalRuntime) name() string { return filepath.Base(x.path) }

func externalRuntimeOf(t *testing.T) externalRuntime {
	t.Helper()
	path := os.Getenv("PEAPOD_EXTERNAL_RUNTIME")
	if path == "" {
		var err error
		if path, err = exec.LookPath("runc"); err != nil {
			t.Fatalf("the external handler needs Debian's runc: %v", err)
		}
	}
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatalf("external runtime: %v", err)
	}
	return externalRuntime{path: path, handler: filepath.Base(path) + "-ext"}
}

// volumeData is the image the image-volume check mounts: data only, no
// shell (the container's image runs the reads).
var volumeData = image("volume-data")

func pushVolumeData(t *testing.T, reg string) {
	t.Helper()
	root := t.TempDir()
	for rel, content := range map[string]string{
		"data/marker":     "from-the-volume-image\n",
		"data/sub/nested": "in-the-sub-path\n",
	} {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testenv.PushImage(t, reg, "e2e-kubelet/volume-data:1", root, testenv.ImageConfig{})
}

// checkImageVolume: the kubelet pulls the volume's image and asks for it in
// Mount.image (and Mount.image_sub_path for a subPath); the container
// reads the image's files, and cannot write to them.
func checkImageVolume(t *testing.T, e *kubeletEnv) {
	whole := mount(sh("whole", "cat /vol/data/marker; exec sleep 3600"), "data", "/vol")
	sub := sh("sub", "cat /sub/nested; exec sleep 3600")
	sub.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/sub", SubPath: "data/sub"}}
	p := newPod("imagevolume", whole, sub)
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: volumeData, PullPolicy: corev1.PullIfNotPresent},
	}}}
	e.k.apply(t, p)
	e.k.waitPod(t, "imagevolume", podTimeout, "whole and sub running", func(p *corev1.Pod) bool { return running(p, "whole", "sub") })
	if out := waitLog(t, e.k, "imagevolume", "whole", "from-the-volume-image"); out != "from-the-volume-image\n" {
		t.Errorf("whole: log %q, want the image's /data/marker", out)
	}
	if out := waitLog(t, e.k, "imagevolume", "sub", "in-the-sub-path"); out != "in-the-sub-path\n" {
		t.Errorf("sub: log %q, want the image's /data/sub/nested", out)
	}
	if out, err := e.k.run("imagevolume", "sub", "ls", "/sub"); err != nil || out != "nested\n" {
		t.Errorf("sub: /sub holds %q (%v), want only the sub-path's file", out, err)
	}
	// Read-only: the write fails, the shell says so.
	if out, err := e.k.run("imagevolume", "whole", "sh", "-c", "touch${IFS}/vol/data/new||echo${IFS}refused"); err != nil || !strings.Contains(out, "refused") {
		t.Errorf("whole: write into the image volume: %q %v, want it refused", out, err)
	}
	// What the kubelet asked of the runtime: the image by reference.
	sbs := sandboxesOf(t, e.rt, "imagevolume")
	if len(sbs) != 1 {
		t.Fatalf("the runtime has %d sandboxes for imagevolume, want 1", len(sbs))
	}
	for _, c := range containersOf(t, e.rt, sbs[0].Id) {
		st, err := e.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
		if err != nil {
			t.Fatal(err)
		}
		var image *runtimeapi.ImageSpec
		for _, m := range st.Status.Mounts {
			if m.Image != nil {
				image = m.Image
			}
		}
		if image == nil || !strings.Contains(image.UserSpecifiedImage+image.Image, "volume-data") {
			t.Errorf("%s: mounts %v, want one of the volume-data image", c.Metadata.Name, st.Status.Mounts)
		}
	}
	if n := e.pulls.manifests("e2e-kubelet/volume-data"); n < 1 {
		t.Errorf("the volume image was never pulled from the registry")
	}
}

// checkRuntimeClassStandalone pins down what a standalone kubelet does with
// a static pod naming a RuntimeClass: it has no RuntimeClass manager (no
// API server), and kuberuntime/util.NamespacesForPod, checking the
// manager through an interface, calls LookupRuntimeHandler on the nil
// pointer: the kubelet panics before it asks the runtime for a sandbox
// (kubernetes/kubernetes#125561). When a kubelet fixes that, this fails
// and the runtime handler check can move here from crictl.
func checkRuntimeClassStandalone(t *testing.T, e *kubeletEnv, ext externalRuntime) {
	class := ext.handler
	p := newPod("runtimeclass", sh("c", "exec sleep 3600"))
	p.Spec.RuntimeClassName = &class
	e.k.apply(t, p)
	select {
	case <-e.k.exited:
	case <-time.After(podTimeout):
		pod, _ := e.k.pod("runtimeclass")
		t.Fatalf("the kubelet still runs %s after a static pod with runtimeClassName %q: pod %+v; resolved standalone now?",
			podTimeout, class, lastStatus(pod))
	}
	log := e.k.logTail(400)
	if !strings.Contains(log, "nil pointer dereference") || !strings.Contains(log, "runtimeclass.(*Manager).LookupRuntimeHandler") {
		t.Errorf("the kubelet exited, but not in LookupRuntimeHandler's nil pointer:\n%s", e.k.logTail(40))
	}
	if sbs := sandboxesOf(t, e.rt, "runtimeclass"); len(sbs) != 0 {
		t.Errorf("the runtime has %d sandboxes for runtimeclass, want none (the kubelet died before RunPodSandbox)", len(sbs))
	}
}

// checkRuntimeClass: with an API server to read the RuntimeClass from,
// the kubelet runs a static pod naming it on its handler, the external
// runtime (runc, crun): the sandbox carries the handler, the runtime's own
// state (under the handler's root in peapod's state) has the container
// running, and exec and logs go through the kubelet as on the default
// handler.
func checkRuntimeClass(t *testing.T, e *kubeletEnv, d *daemon, ext externalRuntime) {
	class := ext.handler
	p := newPod("runtimeclass-api", sh("c", "echo on-"+ext.name()+"; exec sleep 3600"))
	p.Spec.RuntimeClassName = &class
	e.k.apply(t, p)
	e.k.waitPod(t, "runtimeclass-api", podTimeout, "c running", func(p *corev1.Pod) bool { return running(p, "c") })
	sbs := sandboxesOf(t, e.rt, "runtimeclass-api")
	if len(sbs) != 1 || sbs[0].RuntimeHandler != ext.handler {
		t.Fatalf("sandboxes of runtimeclass-api: %v, want one on handler %q", sbs, ext.handler)
	}
	ctrs := containersOf(t, e.rt, sbs[0].Id)
	if len(ctrs) != 1 {
		t.Fatalf("containers of runtimeclass-api: %v, want one", ctrs)
	}
	var rs struct{ Status string }
	out, err := exec.Command(ext.path, "--root", filepath.Join(d.State, "oci", ext.handler), "state", ctrs[0].Id).Output()
	if err != nil || json.Unmarshal(out, &rs) != nil || rs.Status != "running" {
		t.Errorf("%s state %s: %s %v; want it running under %s's own root", ext.name(), ctrs[0].Id, out, err, ext.name())
	}
	waitLog(t, e.k, "runtimeclass-api", "c", "on-"+ext.name())
	if out, err := e.k.run("runtimeclass-api", "c", "echo", "exec-ok"); err != nil || out != "exec-ok\n" {
		t.Errorf("exec through the kubelet: %q %v", out, err)
	}
}

// checkDevicePluginCDI: a device plugin (deviceplugin_test.go) whose
// allocation is the CDI device vendor.test/dev=null; a static pod asking
// for its resource gets, through the kubelet's CDI_devices, what the spec
// defines. The API server's node shows when the kubelet counts the device
// (a standalone kubelet shows no node status to wait on, and admits
// nothing it does not count yet).
func checkDevicePluginCDI(t *testing.T, e *kubeletEnv, cp *controlPlane) {
	const res = "vendor.test/null"
	serveDevicePlugin(t, &cdiDevicePlugin{resource: res, cdiName: "vendor.test/dev=null"})
	var node struct {
		Status struct{ Allocatable map[string]string }
	}
	waitFor(t, 60*time.Second, "the node's allocatable "+res, func() bool {
		body, err := cp.request("GET", "/api/v1/nodes/"+kubeletNode, nil)
		return err == nil && json.Unmarshal(body, &node) == nil && node.Status.Allocatable[res] == "1"
	})
	c := sh("c", "exec 2>/dev/null; "+nullCDIProbe+"; exec sleep 3600")
	c.Resources.Limits = corev1.ResourceList{res: resource.MustParse("1")}
	e.k.apply(t, newPod("cdi-device", c))
	e.k.waitPod(t, "cdi-device", podTimeout, "c running", func(p *corev1.Pod) bool { return running(p, "c") })
	if out := waitLog(t, e.k, "cdi-device", "c", "read-only"); out != nullCDIWant {
		t.Errorf("in the container: %q, want %q", out, nullCDIWant)
	}
}

// crictlNode is a peapod driven by the stock crictl, as an operator does.
type crictlNode struct {
	d   *daemon
	bin string
	dir string
	ext externalRuntime
	cfg string
}

func (n *crictlNode) configure(t *testing.T) {
	n.cfg = n.write(t, "crictl.yaml", fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 60\n", n.d.Socket))
	if out, err := n.crictl("pull", busybox); err != nil {
		t.Fatalf("crictl pull: %v\n%s", err, out)
	}
}

func (n *crictlNode) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(n.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// crictl runs crictl with args and returns its stdout, or its stderr
// with the error.
func (n *crictlNode) crictl(args ...string) (string, error) {
	cmd := exec.Command(n.bin, append([]string{"--config", n.cfg}, args...)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(out) + string(ee.Stderr)), err
	}
	return strings.TrimSpace(string(out)), err
}

func (n *crictlNode) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.crictl(args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runPod runs a pod (with handler, if not "") and removes it in cleanup.
func (n *crictlNode) runPod(t *testing.T, name, handler string) (pod, podJSON string) {
	t.Helper()
	podJSON = n.write(t, name+"-pod.json", fmt.Sprintf(`{"metadata":{"name":%q,"namespace":"it","uid":%q},"log_directory":%q,"linux":{}}`,
		name, name+"-uid", filepath.Join(n.dir, name+"-logs")))
	args := []string{"runp"}
	if handler != "" {
		args = append(args, "--runtime", handler)
	}
	pod = n.must(t, append(args, podJSON)...)
	t.Cleanup(func() { n.crictl("rmp", "-f", pod) })
	return pod, podJSON
}

func (n *crictlNode) startContainer(t *testing.T, pod, podJSON string, ctr map[string]any) string {
	t.Helper()
	ctr["image"] = map[string]string{"image": busybox}
	data, err := json.Marshal(ctr)
	if err != nil {
		t.Fatal(err)
	}
	name := ctr["metadata"].(map[string]string)["name"]
	id := n.must(t, "create", pod, n.write(t, name+"-ctr.json", string(data)), podJSON)
	n.must(t, "start", id)
	return id
}

// checkExternalHandler: crictl runp --runtime runs the pod on the external
// runc handler: the sandbox reports it, runc's own state (under the
// handler's root in peapod's state) has the container running, exec and
// logs work through peapod; an unknown handler is refused as NotFound.
func (n *crictlNode) checkExternalHandler(t *testing.T) {
	pod, podJSON := n.runPod(t, "handler", n.ext.handler)
	if h := n.must(t, "inspectp", "-o", "go-template", "--template", "{{.status.runtimeHandler}}", pod); h != n.ext.handler {
		t.Errorf("crictl inspectp: handler %q, want %q", h, n.ext.handler)
	}
	id := n.startContainer(t, pod, podJSON, map[string]any{
		"metadata": map[string]string{"name": "onrunc"},
		"command":  []string{"sh", "-c", "echo on-the-external-runtime; exec sleep 3600"},
		"log_path": "onrunc.log",
	})
	var rs struct{ Status string }
	out, err := exec.Command(n.ext.path, "--root", filepath.Join(n.d.State, "oci", n.ext.handler), "state", id).Output()
	if err != nil || json.Unmarshal(out, &rs) != nil || rs.Status != "running" {
		t.Errorf("%s state %s: %s %v; want it running under %s's own root", n.ext.name(), id, out, err, n.ext.name())
	}
	if out := n.must(t, "exec", "-s", id, "sh", "-c", "echo $((6*7))"); out != "42" {
		t.Errorf("crictl exec: %q, want 42", out)
	}
	deadline := time.Now().Add(30 * time.Second * timeoutScale)
	for out := ""; !strings.Contains(out, "on-the-external-runtime"); out, _ = n.crictl("logs", id) {
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs %s: %q, want the container's line", id, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := n.crictl("runp", "--runtime", "no-such-handler", podJSON); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("crictl runp --runtime no-such-handler: %v %q, want NotFound", err, out)
	}
}

// checkCDIDevices: a container config carrying CDI_devices gets what the
// spec defines (the device node, env and read-only mount of
// vendor.test/dev=null); a device no spec defines is InvalidArgument.
func (n *crictlNode) checkCDIDevices(t *testing.T) {
	pod, podJSON := n.runPod(t, "cdi", "")
	id := n.startContainer(t, pod, podJSON, map[string]any{
		"metadata":    map[string]string{"name": "withdevice"},
		"command":     []string{"sleep", "3600"},
		"CDI_devices": []map[string]string{{"name": "vendor.test/dev=null"}},
	})
	// crictl exec -s fails on a non-zero exit and passes the container's
	// stderr on (the probe's expected "Read-only file system").
	if out := n.must(t, "exec", "-s", id, "sh", "-c", "exec 2>/dev/null; "+nullCDIProbe); out+"\n" != nullCDIWant {
		t.Errorf("in the container: %q, want %q", out, nullCDIWant)
	}
	bad := n.write(t, "unknown-ctr.json", fmt.Sprintf(`{"metadata":{"name":"unknown"},"image":{"image":%q},"command":["true"],"CDI_devices":[{"name":"vendor.test/dev=gpu0"}]}`, busybox))
	if out, err := n.crictl("create", pod, bad, podJSON); err == nil || !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "vendor.test/dev=gpu0") {
		t.Errorf("crictl create with an undefined CDI device: %v %q, want InvalidArgument naming it", err, out)
	}
}
