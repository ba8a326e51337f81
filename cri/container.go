package cri

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox"
	"github.com/peapod-cri/peapod/sandbox/names"
)

func (s *Service) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod sandbox ID is empty")
	}
	cfg := req.GetConfig()
	if cfg == nil {
		return nil, invalid("container config is missing")
	}
	ref := cfg.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("container config names no image")
	}
	if checkpoint.IsArchivePath(ref) {
		return s.restoreContainer(ctx, req)
	}
	img, err := s.images.Status(ctx, ref)
	if err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return nil, fmt.Errorf("image %q is not present, pull it first: %w", ref, err)
		}
		return nil, err
	}
	c, err := s.runtime.CreateContainer(ctx, req.GetPodSandboxId(), cfg, containerImage(img))
	if err != nil {
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}

// containerImage is what a container takes from its image, for both a
// plain create and a restore.
func containerImage(img *image.Image) sandbox.Image {
	return sandbox.Image{
		ID:         img.ID,
		User:       img.User,
		WorkingDir: img.WorkingDir,
		Entrypoint: img.Entrypoint,
		Cmd:        img.Cmd,
		Env:        img.Env,
		StopSignal: img.StopSignal,
		Volumes:    img.Volumes,
	}
}

func (s *Service) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	if err := s.runtime.StartContainer(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

func (s *Service) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container ID is empty")
	}
	if err := s.runtime.StopContainer(ctx, req.GetContainerId(), req.GetTimeout()); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Service) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container ID is empty")
	}
	if err := s.runtime.RemoveContainer(ctx, req.GetContainerId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Service) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.runtime.Container(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: containerStatus(&c)}
	if req.GetVerbose() {
		resp.Info = containerInfo(&c)
	}
	return resp, nil
}

// containerStatus is what ContainerStatus and container events report.
func containerStatus(c *sandbox.Container) *runtimeapi.ContainerStatus {
	st := &runtimeapi.ContainerStatus{
		Id:          c.ID,
		Metadata:    c.Config.GetMetadata(),
		State:       containerState(c.State),
		CreatedAt:   c.CreatedAt,
		StartedAt:   c.StartedAt,
		FinishedAt:  c.FinishedAt,
		ExitCode:    c.ExitCode,
		Image:       userImage(c.Config.GetImage()),
		ImageRef:    c.Image.ID,
		ImageId:     c.Image.ID,
		Reason:      c.Reason,
		Message:     c.Message,
		Labels:      c.Config.GetLabels(),
		Annotations: c.Config.GetAnnotations(),
		LogPath:     c.LogPath,
		User:        containerUser(c.User.UID, c.User.GID, c.User.AdditionalGids),
		Resources:   &runtimeapi.ContainerResources{Linux: c.Config.GetLinux().GetResources()},
		StopSignal:  oci.SignalEnum(c.StopSignal),
	}
	st.Mounts = statusMounts(c)
	return st
}

// statusMounts are the container's mounts as it asked for them; an image
// volume names the image it mounts by ID in Image.image and Image.image_ref
// (the kubelet's image garbage collection keeps the images named there,
// critest compares image_ref with PullImage's answer), as CRI-O reports it.
func statusMounts(c *sandbox.Container) []*runtimeapi.Mount {
	mounts := c.Config.GetMounts()
	if len(c.ImageVolumes) == 0 {
		return mounts
	}
	out := slices.Clone(mounts)
	for _, v := range c.ImageVolumes {
		if v.Mount < 0 || v.Mount >= len(out) {
			continue
		}
		m := proto.Clone(out[v.Mount]).(*runtimeapi.Mount)
		img := proto.Clone(m.GetImage()).(*runtimeapi.ImageSpec)
		img.Image, img.ImageRef = v.ImageID, v.ImageID
		m.Image = img
		out[v.Mount] = m
	}
	return out
}

// userImage is the image a container reports: the reference its user
// asked for. The kubelet creates containers with the image ID as
// image.image and the pod's reference as user_specified_image, and shows
// status.image.image as the pod's containerStatuses[].image, which node
// e2e specs compare with the pod spec's image (containerd reports a tag
// of the image instead, the first of its names). Without
// user_specified_image (crictl) image.image is that reference already.
func userImage(spec *runtimeapi.ImageSpec) *runtimeapi.ImageSpec {
	if spec.GetUserSpecifiedImage() == "" || spec.GetImage() == spec.GetUserSpecifiedImage() {
		return spec
	}
	return &runtimeapi.ImageSpec{
		Image:              spec.GetUserSpecifiedImage(),
		Annotations:        spec.GetAnnotations(),
		UserSpecifiedImage: spec.GetUserSpecifiedImage(),
		RuntimeHandler:     spec.GetRuntimeHandler(),
	}
}

func containerUser(uid, gid uint32, groups []uint32) *runtimeapi.ContainerUser {
	u := &runtimeapi.LinuxContainerUser{Uid: int64(uid), Gid: int64(gid)}
	for _, g := range groups {
		u.SupplementalGroups = append(u.SupplementalGroups, int64(g))
	}
	return &runtimeapi.ContainerUser{Linux: u}
}

func containerState(s sandbox.ContainerState) runtimeapi.ContainerState {
	switch s {
	case sandbox.ContainerCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case sandbox.ContainerRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case sandbox.ContainerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

// ListContainers answers with the kept encodings of the items
// (listcache.go): the reply's Containers field is empty in this process.
func (s *Service) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return rawList(&runtimeapi.ListContainersResponse{}, s.containerItems(req.GetFilter())), nil
}

// filteredContainers are the candidates of a filter: the one container an
// ID names, the containers of the pod a pod ID names, else all of them
// (an ambiguous prefix is matched against all).
func (s *Service) filteredContainers(f *runtimeapi.ContainerFilter) []sandbox.Container {
	switch {
	case f.GetId() != "":
		c, err := s.runtime.Container(f.GetId())
		if err == nil {
			return []sandbox.Container{c}
		}
		if errors.Is(err, names.ErrUnknown) {
			return nil
		}
	case f.GetPodSandboxId() != "":
		p, err := s.runtime.Pod(f.GetPodSandboxId())
		if err == nil {
			return s.runtime.PodContainers(p.ID)
		}
		if errors.Is(err, names.ErrUnknown) {
			return nil
		}
	}
	return s.runtime.Containers()
}

// containerItems are the encodings of the containers that match f.
func (s *Service) containerItems(f *runtimeapi.ContainerFilter) [][]byte {
	ctrs := s.filteredContainers(f)
	items := make([][]byte, 0, len(ctrs))
	for _, c := range ctrs {
		if f != nil {
			if f.Id != "" && !matchID(c.ID, f.Id) {
				continue
			}
			if f.PodSandboxId != "" && !matchID(c.PodID, f.PodSandboxId) {
				continue
			}
			if f.State != nil && containerState(c.State) != f.State.State {
				continue
			}
			if !matchLabels(c.Config.GetLabels(), f.LabelSelector) {
				continue
			}
		}
		state := containerState(c.State)
		items = append(items, s.ctrCache.get(c.ID, int32(state), func() proto.Message {
			return &runtimeapi.Container{
				Id:           c.ID,
				PodSandboxId: c.PodID,
				Metadata:     c.Config.GetMetadata(),
				Image:        userImage(c.Config.GetImage()),
				ImageRef:     c.Image.ID,
				ImageId:      c.Image.ID,
				State:        state,
				CreatedAt:    c.CreatedAt,
				Labels:       c.Config.GetLabels(),
				Annotations:  c.Config.GetAnnotations(),
			}
		}))
	}
	if f == nil || proto.Equal(f, &runtimeapi.ContainerFilter{}) {
		ids := make([]string, len(ctrs))
		for i := range ctrs {
			ids[i] = ctrs[i].ID
		}
		s.ctrCache.prune(ids)
	}
	return items
}

func (s *Service) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("container ID is empty")
	}
	timeout := time.Duration(req.GetTimeout()) * time.Second
	stdout, stderr, code, err := s.runtime.ExecSync(ctx, req.GetContainerId(), req.GetCmd(), timeout)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout, Stderr: stderr, ExitCode: code}, nil
}
