package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/sandbox"
)

// CheckpointContainer (the kubelet's /checkpoint API, KEP-2008) dumps a
// running container with CRIU into the archive CRI-O and containerd write
// (package checkpoint), leaving it running. The request and the container
// are checked first, so a caller learns about its own mistakes before the
// node's; then whether CRIU can run here at all (FailedPrecondition naming
// the failing check: a node condition, not a missing RPC).
func (s *Service) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("CheckpointContainer: container_id is empty")
	}
	location := req.GetLocation()
	if location == "" || !filepath.IsAbs(location) {
		return nil, invalid(fmt.Sprintf("CheckpointContainer: location %q is not an absolute path", location))
	}
	if err := s.criuEnabled("CheckpointContainer"); err != nil {
		return nil, err
	}
	c, err := s.runtime.Container(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if c.State != sandbox.ContainerRunning {
		return nil, status.Errorf(codes.FailedPrecondition, "CheckpointContainer: container %s is %s, not running", c.ID, c.State)
	}
	if err := s.criu.Check(ctx); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "CheckpointContainer: %v", err)
	}

	// CRIU's images and log, the rootfs diff and the archive's temporary
	// copy beside the archive (same filesystem, no copy of the memory
	// pages across devices), removed once archived; locked while this
	// runs, so that what a crash leaves is swept by the next checkpoint
	// there (checkpoint.WorkDir).
	wd, err := checkpoint.NewWorkDir(filepath.Dir(location))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CheckpointContainer: location %s: %v", location, err)
	}
	defer wd.Remove()
	work := wd.Path
	images := filepath.Join(work, checkpoint.ImagesDirectory)
	dumpCtx, cancel := dumpContext(ctx, req.GetTimeout())
	defer cancel()
	dumped, err := s.runtime.CheckpointContainer(dumpCtx, c.ID, images, work)
	if err != nil {
		if log, rerr := os.ReadFile(filepath.Join(work, "dump.log")); rerr == nil {
			s.log.Warn("criu dump failed", "container", c.ID, "log", tailLines(string(log), 30))
		}
		return nil, err
	}
	spec, err := os.ReadFile(filepath.Join(dumped.Bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s: read its spec: %w", c.ID, err)
	}
	upper, err := checkpoint.UpperDir(dumped.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s: %w", c.ID, err)
	}
	err = checkpoint.WriteArchive(location, checkpoint.Contents{
		Config: checkpoint.Config{
			ID:              dumped.ID,
			Name:            dumped.Config.GetMetadata().GetName(),
			RootfsImage:     dumped.Config.GetImage().GetImage(),
			RootfsImageRef:  dumped.Image.ID,
			RootfsImageName: dumped.Image.Ref,
			OCIRuntime:      "peapod",
			CreatedTime:     time.Unix(0, dumped.CreatedAt),
			CheckpointedAt:  time.Now(),
		},
		Spec:    spec,
		Images:  images,
		Upper:   upper,
		TempDir: work,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint container %s: %w", c.ID, err)
	}
	return &runtimeapi.CheckpointContainerResponse{}, nil
}

// defaultDumpTimeout bounds a dump whose caller set no deadline: CRIU
// can be made to wait for ever by the container, holding its lock.
const defaultDumpTimeout = 10 * time.Minute

// dumpContext is ctx bounded by the request's timeout (seconds; 0: none)
// and, when neither gives a deadline, by defaultDumpTimeout.
func dumpContext(ctx context.Context, timeout int64) (context.Context, context.CancelFunc) {
	if timeout > 0 {
		return context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
	}
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultDumpTimeout)
}

// tailLines is the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// DisableCRIU turns checkpoint and restore off (enable_criu_support =
// false).
func (s *Service) DisableCRIU() { s.criuOff = true }

func (s *Service) criuEnabled(call string) error {
	if s.criuOff {
		return status.Errorf(codes.FailedPrecondition, "%s: checkpoint/restore is disabled on this node (enable_criu_support = false)", call)
	}
	return nil
}

// KubeletCheckpointDir is where the kubelet's checkpoint API has
// checkpoints written (<kubelet root-dir>/checkpoints, by default).
const KubeletCheckpointDir = "/var/lib/kubelet/checkpoints"

// SweepCheckpointLeftovers removes, at the daemon's start, the work
// directories checkpoints into the kubelet's directory left when a daemon
// died mid-checkpoint (CRIU's images hold the container's memory). Those
// of other locations go at the next checkpoint there.
func (s *Service) SweepCheckpointLeftovers() {
	if n := checkpoint.SweepWorkDirs(KubeletCheckpointDir); n > 0 {
		s.log.Info("removed what interrupted checkpoints left", "dir", KubeletCheckpointDir, "count", n)
	}
}
