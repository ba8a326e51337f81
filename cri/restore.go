package cri

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/image"
)

// restoreContainer is CreateContainer whose image names a checkpoint
// archive (an absolute path), as CRI-O restores: the container is created
// on the image it was dumped on, with the dumped process, the archive's
// file changes in its writable layer and its CRIU images in its bundle;
// StartContainer restores it. The archive is checked first (InvalidArgument
// naming the problem), the image it needs (NotFound) and the mounts it
// needs (InvalidArgument), then whether CRIU works here (FailedPrecondition
// with `criu check`'s reason), before anything is created.
//
// containerd 2.x's other form, a checkpoint stored as an OCI image with
// the org.criu.checkpoint.* annotations, is not taken: it needs a
// pull-time image type peapod's image store does not keep; an archive on
// the node is what the kubelet's /checkpoint API writes.
func (s *Service) restoreContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if err := s.criuEnabled("CreateContainer from a checkpoint archive"); err != nil {
		return nil, err
	}
	path := req.GetConfig().GetImage().GetImage()
	a, err := checkpoint.Open(path, checkpoint.DefaultLimits)
	if err != nil {
		return nil, err
	}
	if a.Spec.Process.Terminal {
		return nil, status.Errorf(codes.InvalidArgument, "CreateContainer: checkpoint %s was taken of a container with a terminal, which peapod cannot restore", path)
	}
	img, imgRef, err := s.checkpointImage(ctx, a)
	if err != nil {
		return nil, err
	}
	cfg, err := restoredConfig(req.GetConfig(), a, imgRef)
	if err != nil {
		return nil, err
	}
	if err := s.criu.Check(ctx); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "CreateContainer: restore from checkpoint %s: %v", path, err)
	}
	c, err := s.runtime.RestoreContainer(ctx, req.GetPodSandboxId(), cfg, containerImage(img), a)
	if err != nil {
		return nil, err
	}
	s.log.Info("container created from checkpoint", "container", c.ID, "checkpoint", path, "checkpointed_container", a.Config.ID)
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}

// checkpointImage finds the image the checkpoint's container ran on: by
// ID, else by name. The writable layer the diff goes onto must lie on it.
func (s *Service) checkpointImage(ctx context.Context, a *checkpoint.Archive) (*image.Image, string, error) {
	var refs []string
	for _, r := range []string{a.Config.RootfsImageRef, a.Config.RootfsImageName, a.Config.RootfsImage} {
		if r != "" {
			refs = append(refs, r)
		}
	}
	if len(refs) == 0 {
		return nil, "", status.Errorf(codes.InvalidArgument, "CreateContainer: checkpoint %s: %s names no image", a.Path, checkpoint.ConfigDumpFile)
	}
	for _, r := range refs {
		img, err := s.images.Status(ctx, r)
		if err == nil {
			name := a.Config.RootfsImageName
			if name == "" {
				name = r
			}
			return img, name, nil
		}
		if !errors.Is(err, image.ErrNotFound) {
			return nil, "", err
		}
	}
	return nil, "", status.Errorf(codes.NotFound, "CreateContainer: checkpoint %s was taken on image %s, which is not present: pull it first", a.Path, strings.Join(refs, " / "))
}

// restoredConfig is the caller's config for the new container with the
// dumped container's process (command, environment, working directory)
// and image: CRIU restores the processes the checkpoint holds, and the
// spec must describe them. Name, labels, annotations, mounts, log path
// and resources stay the caller's, as the kubelet sets them for the pod
// it restores into.
//
// CRIU restores every mount it dumped, and finds no mapping for a bind
// mount the new spec lacks ("mnt: No mapping for ..."). CRI-O fills the
// gaps from the archive's spec; peapod does not take host paths from an
// archive (a hostile one could bind the host's / into the container), so
// each dumped bind mount but the pod files peapod binds itself (hostname,
// resolv.conf, /dev/shm) must be given by the caller, as the kubelet gives
// a pod's volumes, /etc/hosts and termination log: a missing one is
// InvalidArgument naming it and its old source.
func restoredConfig(req *runtimeapi.ContainerConfig, a *checkpoint.Archive, imgRef string) (*runtimeapi.ContainerConfig, error) {
	cfg := proto.Clone(req).(*runtimeapi.ContainerConfig)
	p := a.Spec.Process
	cfg.Image = &runtimeapi.ImageSpec{Image: imgRef, UserSpecifiedImage: imgRef}
	cfg.Command, cfg.Args = append([]string(nil), p.Args...), nil
	cfg.WorkingDir = p.Cwd
	cfg.Envs = nil
	for _, kv := range p.Env {
		k, v, _ := strings.Cut(kv, "=")
		cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	cfg.Tty, cfg.Stdin, cfg.StdinOnce = false, req.GetStdin(), req.GetStdinOnce()

	given := map[string]bool{"/etc/hostname": true, "/etc/resolv.conf": true, "/dev/shm": true}
	for _, m := range cfg.GetMounts() {
		given[path.Clean(m.GetContainerPath())] = true
	}
	var missing []string
	for _, m := range a.Spec.Mounts {
		if !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") && m.Type != "bind" {
			continue // proc, sysfs, tmpfs, mqueue, cgroup: made anew
		}
		if dst := path.Clean(m.Destination); !given[dst] {
			missing = append(missing, fmt.Sprintf("%s (from %s)", dst, m.Source))
			given[dst] = true
		}
	}
	if len(missing) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "CreateContainer: checkpoint %s: its container had bind mounts the container config does not give: %s; CRIU restores every dumped mount, so give a mount for each (host paths are not taken from an archive)",
			a.Path, strings.Join(missing, ", "))
	}
	return cfg, nil
}
