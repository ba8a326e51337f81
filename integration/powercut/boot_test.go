// Package powercut is the guest side of make test-powercut
// (integration/powercut/powercut.sh): one boot of a guest whose data disk
// keeps only what reached it before the emulator was killed. Each boot
// starts peapod on that disk, checks what the previous boot's churn left
// against the churn's journal (kept on the host, so a cut cannot lose it),
// optionally removes everything and counts leftovers, then churns until the
// host cuts the power.
package powercut

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// The guest's layout. data is the persistent disk (powercut.sh mounts it);
// the state directory is on /run, a tmpfs, as on a real node: a power cut
// empties it.
const (
	data         = "/var/lib/peapod-pc"
	cgroupParent = "peapod-pc"
	socket       = "/run/peapod-pc.sock"
	bridge       = "pcbr0"
	podCIDR      = "10.198.0.0/16"
	image        = "docker.io/library/busybox:pc"
	extraImage   = "docker.io/library/extra:pc"
)

var (
	root     = filepath.Join(data, "root")
	state    = "/run/peapod-pc"
	cniIPAM  = filepath.Join(data, "cni-ipam") // host-local's allocations: persistent, as /var/lib/cni
	logDir   = filepath.Join(data, "logs")
	workDir  = os.Getenv("POWERCUT_WORK") // on the host (hostfs): journal, results, markers
	cniBin   = os.Getenv("POWERCUT_CNI_BIN")
	binary   = os.Getenv("PEAPOD_BINARY")
	bootNo   = os.Getenv("POWERCUT_BOOT")
	mode     = os.Getenv("POWERCUT_MODE") // churn, cleanup+churn, final
	callTime = 120 * time.Second          // UML: every syscall is slow
)

// TestPowercutBoot is one boot. It never returns in the churn modes: the
// host kills the guest.
func TestPowercutBoot(t *testing.T) {
	if workDir == "" || binary == "" {
		t.Skip("run by integration/powercut/powercut.sh inside its guest")
	}
	regAddr := startRegistry(t)

	d := startDaemon(t, regAddr)
	res := verify(t, d)
	res.Boot = bootNo
	res.StartMillis = d.startMillis
	if mode == "final" || mode == "cleanup+churn" {
		res.Cleaned = true
		res.Leftovers = cleanup(t, d)
		if mode == "final" {
			d.stop(t)
			res.Leftovers = append(res.Leftovers, leftovers(t)...)
			writeResult(t, res)
			if len(res.Leftovers) > 0 || len(res.Violations) > 0 {
				t.Fatalf("violations %v, leftovers %v", res.Violations, res.Leftovers)
			}
			return
		}
		d.stop(t)
		res.Leftovers = append(res.Leftovers, leftovers(t)...)
		d = startDaemon(t, regAddr)
	}
	// The daemon works after the cut: a new pod runs a container from the
	// image (it is then part of the churn).
	ctx, cancel := cctx()
	if err := runOne(ctx, d, "first-"+bootNo, image, func(id string) { journal(t, "created", id) }); err != nil {
		res.Violations = append(res.Violations, "a new pod from the image after the cut: "+err.Error())
	}
	cancel()
	writeResult(t, res)
	if err := os.WriteFile(filepath.Join(workDir, "churning-"+bootNo), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Two workers, as the kubelet's pod workers run in parallel.
	go churn(t, d, "w1")
	churn(t, d, "w2")
}

// ---------------------------------------------------------------- registry

// startRegistry serves the test images from the data disk: pushed at the
// first boot, then synced, they are the "remote" registry, not what the
// cuts test. Pushing them again at every boot would cost more than the
// boot.
func startRegistry(t *testing.T) string {
	dir := filepath.Join(data, "registry")
	os.MkdirAll(dir, 0o755)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", dir, addr)
	if err := os.WriteFile("/tmp/registry.yml", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/docker-registry", "serve", "/tmp/registry.yml")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatal("docker-registry did not answer in 60 s")
		}
	}
	pushed := filepath.Join(dir, "pushed")
	if _, err := os.Stat(pushed); err != nil {
		rootfs := testenv.BusyboxRootfs(t)
		testenv.PushImage(t, addr, "library/busybox:pc", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}})
		// A second image sharing the layer: pulled and removed by the churn.
		testenv.PushImage(t, addr, "library/extra:pc", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}, Env: []string{"EXTRA=1"}})
		syscall.Sync()
		os.WriteFile(pushed, nil, 0o644)
		syscall.Sync()
	}
	return addr
}

// ---------------------------------------------------------------- daemon

type daemon struct {
	cmd         *exec.Cmd
	startMillis int64
	rt          runtimeapi.RuntimeServiceClient
	img         runtimeapi.ImageServiceClient
}

func startDaemon(t *testing.T, regAddr string) *daemon {
	t.Helper()
	for _, dir := range []string{root, cniIPAM, logDir, "/tmp/pc/cni"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	reg := fmt.Sprintf(`unqualified-search-registries = ["docker.io"]
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = %q
insecure = true
`, regAddr)
	// Debian's CNI bridge without ipMasq (no iptables/nftables in the UML
	// guest) and host-local with its allocations on the persistent disk.
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "pc", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`,
		bridge, cniIPAM, podCIDR)
	toml := fmt.Sprintf("network = \"cni\"\ncni_bin_dirs = [%q]\n", cniBin)
	for p, c := range map[string]string{"/tmp/pc/registries.conf": reg, "/tmp/pc/cni/10-pc.conflist": conf, "/tmp/pc/peapod.toml": toml} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.OpenFile(filepath.Join(workDir, "daemon-"+bootNo+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(binary, "--config", "/tmp/pc/peapod.toml", "--socket", socket, "--root", root, "--state", state,
		"--cgroup-parent", cgroupParent, "--registries-conf", "/tmp/pc/registries.conf", "--log-level", "debug",
		"--cni-conf-dir", "/tmp/pc/cni")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, err := os.Stat(socket); err != nil; _, err = os.Stat(socket) {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("VIOLATION: the daemon made no socket 90 s after its start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn)}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("VIOLATION: the daemon did not answer 90 s after its start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.startMillis = time.Since(start).Milliseconds()
	t.Logf("daemon answered after %s", time.Since(start).Round(time.Millisecond))
	return d
}

func (d *daemon) stop(t *testing.T) {
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Errorf("VIOLATION: peapod did not exit 60 s after SIGTERM")
		d.cmd.Process.Kill()
		<-done
	}
}

func cctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTime)
}

// ---------------------------------------------------------------- journal

// The journal (on the host) records what the churn saw acknowledged:
// "created POD" after RunPodSandbox returned, "removed POD" after
// RemovePodSandbox returned. Each line is synced before the next call.
func journal(t *testing.T, verb, id string) {
	f, err := os.OpenFile(filepath.Join(workDir, "journal.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%s %s %s\n", bootNo, verb, id)
	f.Sync()
	f.Close()
}

func readJournal(t *testing.T) (created []string, removed map[string]bool, pulled bool) {
	removed = map[string]bool{}
	f, err := os.Open(filepath.Join(workDir, "journal.log"))
	if os.IsNotExist(err) {
		return nil, removed, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fl := strings.Fields(s.Text())
		if len(fl) != 3 {
			continue // a line the cut interrupted
		}
		switch fl[1] {
		case "created":
			created = append(created, fl[2])
		case "removed":
			removed[fl[2]] = true
		case "pulled":
			pulled = true
		}
	}
	return created, removed, pulled
}

// ---------------------------------------------------------------- checks

type result struct {
	Boot        string   `json:"boot"`
	Seen        int      `json:"seen"`      // pods created and not acknowledged removed
	Recovered   int      `json:"recovered"` // listed again, status readable, containers listed
	Absent      int      `json:"absent"`    // not listed
	Resurrected int      `json:"resurrected"`
	Cleaned     bool     `json:"cleaned"`
	Violations  []string `json:"violations"`
	Leftovers   []string `json:"leftovers"`
	StartMillis int64    `json:"start_ms"`
}

func writeResult(t *testing.T, r result) {
	b, _ := json.Marshal(r)
	f, err := os.OpenFile(filepath.Join(workDir, "results.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(append(b, '\n'))
	f.Sync()
	f.Close()
	t.Logf("result: %s", b)
}

// verify checks every pod the journal saw created: after a power cut no
// process survives, so a pod is either listed again (NOTREADY, its
// status and containers readable) or cleanly absent (its leftovers are
// counted at the next cleanup). A pod whose removal was acknowledged
// must not come back.
func verify(t *testing.T, d *daemon) result {
	var r result
	created, removed, pulled := readJournal(t)
	ctx, cancel := cctx()
	defer cancel()
	list, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		r.Violations = append(r.Violations, "ListPodSandbox: "+err.Error())
		return r
	}
	listed := map[string]*runtimeapi.PodSandbox{}
	for _, p := range list.Items {
		listed[p.Id] = p
	}
	for _, id := range created {
		_, ok := listed[id]
		if removed[id] {
			if ok {
				r.Resurrected++
				r.Violations = append(r.Violations, "pod "+id+" removed (acknowledged) is listed again")
			}
			continue
		}
		r.Seen++
		if !ok {
			r.Absent++
			continue
		}
		st, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
		if err != nil {
			r.Violations = append(r.Violations, fmt.Sprintf("pod %s listed, status: %v", id, err))
			continue
		}
		if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			r.Violations = append(r.Violations, fmt.Sprintf("pod %s is %s after a power cut (its processes are gone)", id, st.Status.State))
		}
		cs, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: id}})
		if err != nil {
			r.Violations = append(r.Violations, fmt.Sprintf("pod %s: list containers: %v", id, err))
			continue
		}
		for _, c := range cs.Containers {
			if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				r.Violations = append(r.Violations, fmt.Sprintf("container %s of pod %s RUNNING after a power cut", c.Id, id))
			}
		}
		r.Recovered++
	}
	// An acknowledged pull survives the cut, and a new pod runs a
	// container from the image.
	if pulled {
		if st, err := d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil || st.Image == nil {
			r.Violations = append(r.Violations, fmt.Sprintf("image %s pulled before the cut is gone (%v)", image, err))
		}
	}
	if _, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		r.Violations = append(r.Violations, "pull after the cut: "+err.Error())
	} else {
		journal(t, "pulled", image)
	}
	return r
}

// cleanup removes every pod (as the kubelet does after a node restart).
func cleanup(t *testing.T, d *daemon) (left []string) {
	ctx, cancel := cctx()
	defer cancel()
	list, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return []string{"list: " + err.Error()}
	}
	for _, p := range list.Items {
		if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			left = append(left, fmt.Sprintf("stop pod %s: %v", p.Id, err))
		}
		if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			left = append(left, fmt.Sprintf("remove pod %s: %v", p.Id, err))
			continue
		}
		journal(t, "removed", p.Id)
	}
	cs, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err == nil && len(cs.Containers) > 0 {
		left = append(left, fmt.Sprintf("%d containers listed after removing every pod", len(cs.Containers)))
	}
	imgs, err := d.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return append(left, "list images: "+err.Error())
	}
	found := false
	for _, im := range imgs.Images {
		for _, tag := range im.RepoTags {
			found = found || tag == image
		}
	}
	if !found {
		left = append(left, "image "+image+" no longer listed")
	}
	return left
}

// leftovers, with the daemon stopped: processes, mounts, veths, IP
// allocations, cgroups and storage containers/layers no image holds.
func leftovers(t *testing.T) (left []string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), cgroupParent) {
			cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
			left = append(left, fmt.Sprintf("process %s (%q) in %s", filepath.Base(filepath.Dir(p)), strings.ReplaceAll(string(cmd), "\x00", " "), cgroupParent))
		}
	}
	for _, dir := range []string{data, state} {
		for _, m := range testenv.MountsUnder(dir) {
			if m == data { // the disk itself
				continue
			}
			left = append(left, "mount "+m)
		}
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "type", "veth").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "veths: "+strings.TrimSpace(string(out)))
	}
	ips, _ := filepath.Glob(filepath.Join(cniIPAM, "pc", "*"))
	for _, ip := range ips {
		if b := filepath.Base(ip); b != "lock" && !strings.HasPrefix(b, "last_reserved_ip") {
			left = append(left, "CNI allocation "+b)
		}
	}
	var walk func(string)
	walk = func(dir string) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				left = append(left, "cgroup "+filepath.Join(dir, e.Name()))
				walk(filepath.Join(dir, e.Name()))
			}
		}
	}
	walk(filepath.Join("/sys/fs/cgroup", cgroupParent))
	left = append(left, storageLeftovers(t)...)
	return left
}

// storageLeftovers reads c/storage's records and peapod's records of
// writable layers: no container may remain, and every layer (record or
// directory) must belong to an image.
func storageLeftovers(t *testing.T) (left []string) {
	sroot := filepath.Join(root, "storage")
	type rec struct {
		ID     string `json:"id"`
		Layer  string `json:"layer"`
		Parent string `json:"parent"`
	}
	read := func(p string) []rec {
		var rs []rec
		b, err := os.ReadFile(p)
		if err == nil && len(b) > 0 {
			if err := json.Unmarshal(b, &rs); err != nil {
				left = append(left, fmt.Sprintf("%s: %v", p, err))
			}
		}
		return rs
	}
	for _, f := range []string{"overlay-containers/containers.json", "overlay-containers/volatile-containers.json"} {
		for _, c := range read(filepath.Join(sroot, f)) {
			left = append(left, "storage container "+c.ID)
		}
	}
	// peapod's records of containers' writable layers (image/rwlayer.go).
	rw, _ := os.ReadDir(filepath.Join(sroot, "peapod-rwlayers"))
	for _, e := range rw {
		left = append(left, "writable layer record "+e.Name())
	}
	layers := map[string]rec{}
	for _, f := range []string{"overlay-layers/layers.json", "overlay-layers/volatile-layers.json"} {
		for _, l := range read(filepath.Join(sroot, f)) {
			layers[l.ID] = l
		}
	}
	keep := map[string]bool{}
	for _, im := range read(filepath.Join(sroot, "overlay-images/images.json")) {
		for id := im.Layer; id != "" && !keep[id]; id = layers[id].Parent {
			keep[id] = true
		}
	}
	for id := range layers {
		if !keep[id] {
			left = append(left, "storage layer "+id+" of no image")
		}
	}
	dirs, _ := os.ReadDir(filepath.Join(sroot, "overlay"))
	for _, e := range dirs {
		if n := e.Name(); n != "l" && n != "staging" && n != "tempdirs" && !strings.HasPrefix(n, ".") && !keep[n] {
			left = append(left, "overlay directory "+n+" of no image layer")
		}
	}
	return left
}

// ---------------------------------------------------------------- churn

func runOne(ctx context.Context, d *daemon, name, img string, onCreated func(id string)) error {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "pc", Uid: name + "-uid"},
		LogDirectory: filepath.Join(logDir, name),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return fmt.Errorf("run pod %s: %w", name, err)
	}
	onCreated(run.PodSandboxId)
	for i := range 1 + rand.IntN(2) {
		cc := &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("c%d", i)},
			Image:    &runtimeapi.ImageSpec{Image: img},
			Command:  []string{"sh", "-c", "echo up; while :; do sleep 1; done"},
			LogPath:  fmt.Sprintf("c%d.log", i),
		}
		cr, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cc, SandboxConfig: cfg})
		if err != nil {
			return fmt.Errorf("create container in pod %s: %w", name, err)
		}
		if i > 0 {
			continue // left created: a state the cut must also handle
		}
		if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			return fmt.Errorf("start container in pod %s: %w", name, err)
		}
	}
	return nil
}

// churn runs pods, containers, removals and pulls until the power goes.
// Errors of the churn itself fail the boot's log (the host reports them)
// but are not checked further: the cut is what the harness tests.
func churn(t *testing.T, d *daemon, worker string) {
	var live []string
	for i := 0; ; i++ {
		ctx, cancel := cctx()
		var err error
		switch op := rand.IntN(10); {
		case op < 5 || len(live) == 0:
			img := image
			if op == 0 {
				img = extraImage
				_, err = d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img}})
			}
			if err == nil {
				err = runOne(ctx, d, fmt.Sprintf("b%s-%s-p%d", bootNo, worker, i), img, func(id string) {
					journal(t, "created", id)
					live = append(live, id)
				})
			}
		case op < 8:
			k := rand.IntN(len(live))
			id := live[k]
			if _, err = d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err == nil {
				if _, err = d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err == nil {
					journal(t, "removed", id)
					live = append(live[:k], live[k+1:]...)
				}
			}
		case op < 9:
			_, err = d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}})
		default:
			// Removing an image in use fails by design; only the error
			// log shows it.
			_, err = d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: extraImage}})
		}
		cancel()
		if err != nil {
			t.Logf("churn %s op %d: %v", worker, i, err)
		}
	}
}
