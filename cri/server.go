// Package cri is peapod's wire: the CRI v1 RuntimeService and ImageService
// over gRPC. Handlers validate a request, call the domain packages (sandbox,
// image) and map their errors to gRPC codes in one place (errors.go).
package cri

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/checkpoint"
	"github.com/peapod-cri/peapod/cri/validate"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/metrics"
	"github.com/peapod-cri/peapod/sandbox"
)

// Images is the image store as the CRI layer uses it.
type Images interface {
	Pull(ctx context.Context, ref string, auth *image.Auth) (*image.Image, error)
	Status(ctx context.Context, ref string) (*image.Image, error)
	List(ctx context.Context) ([]*image.Image, error)
	Remove(ctx context.Context, ref string) error
	FsInfo() (mountpoint string, usedBytes, inodesUsed uint64, err error)
	// ContainerFsInfo is FsInfo for the containers' writable layers;
	// Split says they are apart from the images (config container_root).
	ContainerFsInfo() (mountpoint string, usedBytes, inodesUsed uint64, err error)
	Split() bool
}

// Info is what Version, Status and RuntimeConfig report.
type Info struct {
	Version      string
	CgroupDriver string // "cgroupfs" or "systemd"
	// NetworkReady says why pods cannot get a network now, or nil.
	NetworkReady func() error
	// Verbose is what a verbose Status reports, each value as JSON under
	// its key ("config": the effective config, as containerd's); nil: none.
	Verbose func() map[string]any
}

// Service implements runtimeapi.RuntimeServiceServer and
// runtimeapi.ImageServiceServer. RPCs not built yet answer Unimplemented
// with their name (from the embedded Unimplemented servers).
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	runtime *sandbox.Runtime
	images  Images
	streams *StreamServer
	events  *EventBus // nil: GetContainerEvents is unavailable
	info    Info
	log     *slog.Logger
	metrics *metrics.Metrics   // nil: not recorded
	criu    checkpoint.Checker // zero: criu from $PATH
	// criuOff: checkpoint/restore is disabled by the node's config.
	criuOff bool

	ctrCache, podCache itemCache // list items' encodings (listcache.go)
}

// NewService wires the domain into the CRI services.
func NewService(rt *sandbox.Runtime, images Images, streams *StreamServer, events *EventBus, info Info, log *slog.Logger) *Service {
	return &Service{runtime: rt, images: images, streams: streams, events: events, info: info, log: log}
}

// Listen creates the unix socket (mode 0660, owned by root and group, by
// default root), replacing a stale one left by a crash.
func Listen(path, group string) (net.Listener, error) {
	gid, err := lookupGroup(group)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("chown socket: %w", err)
	}
	return l, nil
}

// NewGRPCServer returns a gRPC server with both CRI services registered.
// Messages up to 16 MiB are accepted, as kubelet's client allows.
func (s *Service) NewGRPCServer() *grpc.Server {
	const maxMsg = 16 << 20
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMsg),
		grpc.MaxSendMsgSize(maxMsg),
		// observe (observe.go) sees every call, the refused ones too.
		grpc.ChainUnaryInterceptor(s.observeUnary, s.validateCall),
		grpc.StreamInterceptor(s.observeStream),
	)
	runtimeapi.RegisterRuntimeServiceServer(srv, s)
	runtimeapi.RegisterImageServiceServer(srv, s)
	return srv
}

// validateCall validates every request (package validate) before its handler
// runs; observeUnary logs the refusal.
func (s *Service) validateCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := validate.Request(req); err != nil {
		return nil, invalid(err.Error())
	}
	return handler(ctx, req)
}

// lookupGroup resolves a group name or numeric GID; "" is root's group.
func lookupGroup(group string) (int, error) {
	if group == "" {
		return 0, nil
	}
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}
