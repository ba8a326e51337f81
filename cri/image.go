package cri

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/image"
)

func (s *Service) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image reference is empty")
	}
	var auth *image.Auth
	if a := req.GetAuth(); a != nil {
		auth = &image.Auth{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" && a.Username == "" {
			auth.Username, auth.Password = decodeBasicAuth(a.Auth)
		}
	}
	img, err := s.images.Pull(ctx, ref, auth)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}

// ImageStatus answers an empty status, not an error, for an absent image:
// that is how kubelet learns it has to pull.
func (s *Service) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image reference is empty")
	}
	img, err := s.images.Status(ctx, ref)
	if errors.Is(err, image.ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: criImage(img)}
	if req.GetVerbose() {
		// imageSpec as containerd reports it; the rest so a person need not
		// dig them out of it.
		info, _ := json.Marshal(map[string]any{
			"imageSpec":  json.RawMessage(img.ConfigJSON),
			"stopSignal": img.StopSignal,
			"volumes":    img.Volumes,
			"pinned":     img.Pinned,
			// The containers that mount it as an image volume (it cannot
			// be removed while there are any).
			"imageVolumeOf": s.imageVolumeUsers(img.ID),
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

func (s *Service) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	if want := req.GetFilter().GetImage().GetImage(); want != "" {
		img, err := s.images.Status(ctx, want)
		if errors.Is(err, image.ErrNotFound) {
			return &runtimeapi.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		return &runtimeapi.ListImagesResponse{Images: []*runtimeapi.Image{criImage(img)}}, nil
	}
	imgs, err := s.images.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*runtimeapi.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, criImage(img))
	}
	return &runtimeapi.ListImagesResponse{Images: out}, nil
}

func (s *Service) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("image reference is empty")
	}
	if s.runtime != nil {
		// Removed containers hold their image until their root
		// filesystems are gone, which happens after RemoveContainer returns.
		if err := s.runtime.WaitRemovals(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.refuseMountedImage(ctx, ref); err != nil {
		return nil, err
	}
	if err := s.images.Remove(ctx, ref); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// refuseMountedImage refuses, as CRI-O does, to remove (or untag) an image
// that a container mounts as an image volume, naming the container; it
// can be removed once those containers are. The image store would refuse
// too (the volume is a storage container on the image), less clearly.
func (s *Service) refuseMountedImage(ctx context.Context, ref string) error {
	if s.runtime == nil {
		return nil
	}
	img, err := s.images.Status(ctx, ref)
	if errors.Is(err, image.ErrNotFound) {
		return nil // removing an absent image is not an error
	}
	if err != nil {
		return err
	}
	if users := s.runtime.ImageVolumeUsers(img.ID); len(users) > 0 {
		return status.Errorf(codes.FailedPrecondition, "image %q (%s) is mounted as an image volume by container %s: remove the container first",
			ref, img.ID, strings.Join(users, ", "))
	}
	return nil
}

// ImageFsInfo reports the image filesystem and the containers' writable
// layers' filesystem: one entry for both, or, with container_root set, one
// each (KEP-4191), so that the kubelet's eviction and image GC measure
// each where it lives.
func (s *Service) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	images, err := fsUsage(s.images.FsInfo)
	if err != nil {
		return nil, err
	}
	containers := images
	if s.images.Split() {
		if containers, err = fsUsage(s.images.ContainerFsInfo); err != nil {
			return nil, err
		}
	}
	return &runtimeapi.ImageFsInfoResponse{
		ImageFilesystems:     []*runtimeapi.FilesystemUsage{images},
		ContainerFilesystems: []*runtimeapi.FilesystemUsage{containers},
	}, nil
}

func fsUsage(measure func() (string, uint64, uint64, error)) (*runtimeapi.FilesystemUsage, error) {
	mnt, used, inodes, err := measure()
	if err != nil {
		return nil, err
	}
	return &runtimeapi.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mnt},
		UsedBytes:  &runtimeapi.UInt64Value{Value: used},
		InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
	}, nil
}

func (s *Service) imageVolumeUsers(id string) []string {
	if s.runtime == nil {
		return nil
	}
	return s.runtime.ImageVolumeUsers(id)
}

// criImage reports the image's user as kubelet expects: a numeric user as
// uid, a name as username (the group part is dropped either way).
func criImage(img *image.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
		Pinned:      img.Pinned,
	}
	user, _, _ := strings.Cut(img.User, ":")
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		out.Uid = &runtimeapi.Int64Value{Value: uid}
	} else {
		out.Username = user
	}
	return out
}
