package integration

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// hostileLayers is how many layers TestEscapeImageLayerFlood's image has
// on top of its busybox layer: more than overlay stacks (storage mounts at
// most 500 lower layers), so no container could ever run it.
const hostileLayers = 600

// TestEscapeImageLayerFlood: a registry serves an image of hundreds of
// (identical, empty) layers; a 4 MiB manifest holds some 20,000. Every
// layer stored rewrote the store's whole layer list and the overlay
// driver's list of lower layers, work and disk writes in the square of
// the count, under the store's lock that every create and pull takes, for
// an image that could never be mounted. The pull is refused from the
// manifest, before a layer is fetched or stored.
func TestEscapeImageLayerFlood(t *testing.T) {
	regAddr := testenv.StartRegistry(t)
	base, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := testenv.LayerFromDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	adds := make([]mutate.Addendum, hostileLayers)
	for i := range adds {
		adds[i] = mutate.Addendum{Layer: empty}
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(regAddr+"/e2e-test-images/busybox:layers", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(t, regAddr)
	d.Start()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute*timeoutScale)
	defer cancel()
	start := time.Now()
	_, err = d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:layers"}})
	took := time.Since(start).Round(time.Millisecond)
	if err == nil {
		t.Fatalf("an image of %d layers was pulled (in %s), want a refusal", hostileLayers+1, took)
	}
	t.Logf("refused in %s: %v", took, err)
	if took > 30*time.Second*timeoutScale {
		t.Errorf("the refusal took %s", took)
	}
	l, err := d.Img.ListImages(ctx(t), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Images) != 0 {
		t.Errorf("images stored after the refusal: %v", l.Images)
	}
}
