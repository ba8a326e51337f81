package integration

import (
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestImageIDsAgree: since Kubernetes 1.36 the kubelet takes the image_ref
// PullImage returns as the image's identity and compares it with
// Image.id, Container.image_id and ContainerStatus.image_id (and the
// image_ref fields beside them). An image pulled by tag and one pulled by
// digest, each run as the kubelet does it (the ID as the image, the user's
// reference as user_specified_image) and as crictl does (the reference
// itself): every one of these fields is the same ID, and the image the
// container reports is the user's reference (the kubelet's
// containerStatuses[].image; node e2e "image is updated" specs).
func TestImageIDsAgree(t *testing.T) {
	reg := testenv.StartRegistry(t)
	rootfs := testenv.BusyboxRootfs(t)
	testenv.PushImage(t, reg, "e2e-test-images/busybox:tagged", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}, Env: []string{"WHICH=tag"}})
	dig := testenv.PushImage(t, reg, "e2e-test-images/busybox:other", rootfs, testenv.ImageConfig{Cmd: []string{"sh"}, Env: []string{"WHICH=digest"}})
	d := newDaemon(t, reg)
	d.Start()
	c := ctx(t)

	podCfg := podConfig("imageids", t.TempDir())
	pod := runPod(t, d, podCfg).PodSandboxId
	ids := map[string]bool{}
	for _, ref := range []string{
		"registry.k8s.io/e2e-test-images/busybox:tagged",
		"registry.k8s.io/e2e-test-images/busybox@" + dig,
	} {
		pulled, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		id := pulled.ImageRef
		if !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
			t.Errorf("%s: PullImage image_ref %q is not an image ID", ref, id)
		}
		ids[id] = true
		for _, spec := range []string{ref, id} {
			st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: spec}})
			if err != nil || st.GetImage().GetId() != id {
				t.Errorf("ImageStatus(%s).id = %q, %v; want %s", spec, st.GetImage().GetId(), err, id)
			}
		}
		list, err := d.Img.ListImages(c, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: ref}}})
		if err != nil || len(list.Images) != 1 || list.Images[0].Id != id {
			t.Errorf("ListImages(%s) = %v, %v; want one image %s", ref, list.GetImages(), err, id)
		}

		for i, img := range []*runtimeapi.ImageSpec{
			{Image: id, UserSpecifiedImage: ref}, // the kubelet
			{Image: ref},                         // crictl
		} {
			name := []string{"kubelet", "crictl"}[i]
			cfg := containerConfig(name+"-"+id[7:15], "", "sleep", "600")
			cfg.Image = img
			cid := startContainer(t, d, pod, podCfg, cfg)
			st := containerStatus(t, d, cid)
			if st.ImageId != id || st.ImageRef != id {
				t.Errorf("%s from %s: ContainerStatus image_id %q image_ref %q, want %s", name, ref, st.ImageId, st.ImageRef, id)
			}
			// The kubelet shows image.image as containerStatuses[].image,
			// which node e2e compares with the pod spec's reference.
			if got := st.GetImage().GetImage(); got != ref {
				t.Errorf("%s from %s: ContainerStatus image %q, want the user's reference", name, ref, got)
			}
			cl, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: cid}})
			if err != nil || len(cl.Containers) != 1 {
				t.Fatalf("ListContainers(%s) = %v, %v", cid, cl, err)
			}
			if got := cl.Containers[0]; got.ImageId != id || got.ImageRef != id {
				t.Errorf("%s from %s: Container image_id %q image_ref %q, want %s", name, ref, got.ImageId, got.ImageRef, id)
			}
			if got := cl.Containers[0].GetImage().GetImage(); got != ref {
				t.Errorf("%s from %s: Container image %q, want the user's reference", name, ref, got)
			}
		}
	}
	if len(ids) != 2 {
		t.Errorf("the two images have IDs %v, want two distinct ones", ids)
	}
}

// TestListStreams: each Stream* RPC (cri-api 0.37, KEP-5825) sends exactly
// the items of its List* counterpart, with the same filter, and ends.
func TestListStreams(t *testing.T) {
	d, image := readyDaemon(t)
	c := ctx(t)
	var pods []string
	for _, name := range []string{"streama", "streamb"} {
		cfg := podConfig(name, t.TempDir())
		pod := runPod(t, d, cfg).PodSandboxId
		pods = append(pods, pod)
		startContainer(t, d, pod, cfg, containerConfig("sleeper", image, "sleep", "600"))
	}

	check := func(name string, list, streamed []string) {
		t.Helper()
		sort.Strings(list)
		sort.Strings(streamed)
		if len(list) == 0 || strings.Join(list, ",") != strings.Join(streamed, ",") {
			t.Errorf("%s: streamed %v, listed %v", name, streamed, list)
		}
	}

	lp, err := d.RT.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	check("pods", idsOf(lp.Items, (*runtimeapi.PodSandbox).GetId),
		streamed(t, must(d.RT.StreamPodSandboxes(c, &runtimeapi.StreamPodSandboxesRequest{})), func(r *runtimeapi.StreamPodSandboxesResponse) []string {
			return idsOf(r.PodSandboxes, (*runtimeapi.PodSandbox).GetId)
		}))
	filter := &runtimeapi.ContainerFilter{PodSandboxId: pods[0]}
	lc, err := d.RT.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil || len(lc.Containers) != 1 {
		t.Fatalf("ListContainers(pod %s) = %v, %v", pods[0], lc, err)
	}
	check("containers of one pod", idsOf(lc.Containers, (*runtimeapi.Container).GetId),
		streamed(t, must(d.RT.StreamContainers(c, &runtimeapi.StreamContainersRequest{Filter: filter})), func(r *runtimeapi.StreamContainersResponse) []string {
			return idsOf(r.Containers, (*runtimeapi.Container).GetId)
		}))
	lcs, err := d.RT.ListContainerStats(c, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	statID := func(s *runtimeapi.ContainerStats) string { return s.GetAttributes().GetId() }
	check("container stats", idsOf(lcs.Stats, statID),
		streamed(t, must(d.RT.StreamContainerStats(c, &runtimeapi.StreamContainerStatsRequest{})), func(r *runtimeapi.StreamContainerStatsResponse) []string {
			return idsOf(r.ContainerStats, statID)
		}))
	lps, err := d.RT.ListPodSandboxStats(c, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	podStatID := func(s *runtimeapi.PodSandboxStats) string { return s.GetAttributes().GetId() }
	check("pod stats", idsOf(lps.Stats, podStatID),
		streamed(t, must(d.RT.StreamPodSandboxStats(c, &runtimeapi.StreamPodSandboxStatsRequest{})), func(r *runtimeapi.StreamPodSandboxStatsResponse) []string {
			return idsOf(r.PodSandboxStats, podStatID)
		}))
	lm, err := d.RT.ListPodSandboxMetrics(c, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	check("pod metrics", idsOf(lm.PodMetrics, (*runtimeapi.PodSandboxMetrics).GetPodSandboxId),
		streamed(t, must(d.RT.StreamPodSandboxMetrics(c, &runtimeapi.StreamPodSandboxMetricsRequest{})), func(r *runtimeapi.StreamPodSandboxMetricsResponse) []string {
			return idsOf(r.PodSandboxMetrics, (*runtimeapi.PodSandboxMetrics).GetPodSandboxId)
		}))
	li, err := d.Img.ListImages(c, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	check("images", idsOf(li.Images, (*runtimeapi.Image).GetId),
		streamed(t, must(d.Img.StreamImages(c, &runtimeapi.StreamImagesRequest{})), func(r *runtimeapi.StreamImagesResponse) []string {
			return idsOf(r.Images, (*runtimeapi.Image).GetId)
		}))

	// A filter that matches nothing: the stream ends without a message.
	none := streamed(t, must(d.RT.StreamContainers(c, &runtimeapi.StreamContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: "0000000000000000"}})),
		func(r *runtimeapi.StreamContainersResponse) []string {
			if len(r.Containers) == 0 {
				t.Errorf("StreamContainers sent an empty message")
			}
			return idsOf(r.Containers, (*runtimeapi.Container).GetId)
		})
	if len(none) != 0 {
		t.Errorf("StreamContainers(no such ID) = %v", none)
	}
}

// must opens a stream; the test cannot go on without it.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func idsOf[T any](items []T, id func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, id(it))
	}
	return out
}

// streamed reads a stream to its end and gathers the IDs of every message.
func streamed[R any](t *testing.T, s grpc.ServerStreamingClient[R], ids func(*R) []string) []string {
	t.Helper()
	var out []string
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		out = append(out, ids(r)...)
	}
}
