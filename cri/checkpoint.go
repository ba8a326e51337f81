package cri

import (
	"context"
	"fmt"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

// CheckpointContainer (the kubelet's /checkpoint API, KEP-2008) needs CRIU.
// The request and the container are checked first, so a caller learns
// about its own mistakes before the node's; then whether CRIU can run here
// (FailedPrecondition naming the failing check: a node condition, not a
// missing RPC). Dumping itself is not built yet: a node whose CRIU passes
// its check gets Unimplemented, never a half-written archive.
func (s *Service) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	if req.GetContainerId() == "" {
		return nil, invalid("CheckpointContainer: container_id is empty")
	}
	if loc := req.GetLocation(); loc == "" || !filepath.IsAbs(loc) {
		return nil, invalid(fmt.Sprintf("CheckpointContainer: location %q is not an absolute path", loc))
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
	return nil, status.Errorf(codes.Unimplemented, "CheckpointContainer: criu check passes on this node, but peapod does not dump containers yet")
}
