package integration

import (
	"encoding/base64"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// PullImage against a registry with htpasswd auth, through the daemon:
// credentials in the request (both forms), none and wrong ones; then the
// image's status, verbose info and the image filesystem.
func TestImageServiceAuthAndStatus(t *testing.T) {
	const user, pass = "kube", "s3cret"
	addr := testenv.StartRegistryWithAuth(t, user, pass)
	img, err := testenv.BuildImage(testenv.BusyboxRootfs(t), testenv.ImageConfig{
		Cmd: []string{"sh"}, StopSignal: "SIGQUIT", Volumes: []string{"/data"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := addr + "/private/busybox:1"
	testenv.Push(t, ref, img, user, pass)
	d := newDaemon(t, addr)
	d.Start()
	c := ctx(t)
	spec := &runtimeapi.ImageSpec{Image: ref}

	for _, tc := range []struct {
		name string
		auth *runtimeapi.AuthConfig
	}{
		{"no credentials", nil},
		{"wrong password", &runtimeapi.AuthConfig{Username: user, Password: "nope"}},
	} {
		_, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: spec, Auth: tc.auth})
		if grpcCode(err) != "Unauthenticated" || !strings.Contains(err.Error(), ref) {
			t.Errorf("%s: PullImage = %v; want Unauthenticated naming %s", tc.name, err, ref)
		}
	}
	if st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: spec}); err != nil || st.Image != nil {
		t.Fatalf("after failed pulls: ImageStatus = %v, %v; want absent", st, err)
	}
	for _, auth := range []*runtimeapi.AuthConfig{
		{Username: user, Password: pass},
		{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	} {
		if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: spec, Auth: auth}); err != nil {
			t.Fatalf("PullImage with good credentials: %v", err)
		}
	}
	_, err = d.Img.PullImage(c, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: addr + "/private/busybox:nope"}, Auth: &runtimeapi.AuthConfig{Username: user, Password: pass}})
	if grpcCode(err) != "NotFound" || !strings.Contains(err.Error(), "private/busybox:nope") {
		t.Errorf("missing tag: %v; want NotFound naming it", err)
	}

	st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: spec, Verbose: true})
	if err != nil || st.Image == nil {
		t.Fatalf("ImageStatus: %v, %v", st, err)
	}
	var info struct {
		StopSignal string   `json:"stopSignal"`
		Volumes    []string `json:"volumes"`
		Pinned     bool     `json:"pinned"`
		ImageSpec  struct {
			Config struct{ StopSignal string }
		} `json:"imageSpec"`
	}
	if err := jsonUnmarshal(st.Info["info"], &info); err != nil {
		t.Fatalf("verbose info %q: %v", st.Info["info"], err)
	}
	if info.StopSignal != "SIGQUIT" || info.ImageSpec.Config.StopSignal != "SIGQUIT" ||
		strings.Join(info.Volumes, ",") != "/data" || info.Pinned || st.Image.Pinned {
		t.Errorf("verbose info = %+v", info)
	}

	fs, err := d.Img.ImageFsInfo(c, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range append(fs.ImageFilesystems, fs.ContainerFilesystems...) {
		if !strings.HasPrefix(u.FsId.GetMountpoint(), d.Root) || u.UsedBytes.GetValue() < 1<<20 || u.InodesUsed.GetValue() < 50 {
			t.Errorf("ImageFsInfo entry: %v", u)
		}
	}
	if len(fs.ImageFilesystems) != 1 || len(fs.ContainerFilesystems) != 1 {
		t.Errorf("ImageFsInfo: %v", fs)
	}
}
