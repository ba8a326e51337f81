package cri

import (
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/cri/validate"
)

// The Stream* RPCs (cri-api 0.37, KEP-5825, kubelet feature gate
// CRIListStreaming) are the List* RPCs with the answer split over several
// messages, so that a node with many pods stays under the gRPC message
// limit (the kubelet's is 16 MiB). Each one lists what its List* counterpart
// does (same filter, same validation, the same kept encodings of
// listcache.go for pods and containers) and sends the items in messages of at most
// streamMsgBytes; the stream ends (EOF) after the last one. An empty list
// sends no message.
//
// The bound is in bytes, not items: validation lets a pod or container
// carry 256 KiB of labels and 256 KiB of annotations, so a count of items
// bounds nothing (256 such containers are 128 MiB). One item is at most
// about 520 KiB, so every message stays below streamMsgBytes plus one item.
const streamMsgBytes = 2 << 20

// sendChunks sends items in order, as few messages as streamMsgBytes allows.
func sendChunks[T proto.Message](items []T, send func([]T) error) error {
	return sendSized(items, func(m T) int {
		// A repeated field's element: its bytes, its length, its tag.
		sz := proto.Size(m)
		return sz + protowire.SizeVarint(uint64(sz)) + 1
	}, send)
}

// sendRaw is sendChunks for items kept encoded (listcache.go).
func sendRaw(items [][]byte, send func([][]byte) error) error {
	return sendSized(items, func(raw []byte) int { return len(raw) }, send)
}

func sendSized[T any](items []T, sizeOf func(T) int, send func([]T) error) error {
	for len(items) > 0 {
		n, size := 0, 0
		for n < len(items) {
			sz := sizeOf(items[n])
			if n > 0 && size+sz > streamMsgBytes {
				break
			}
			size += sz
			n++
		}
		if err := send(items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// listed validates the List* request as the unary interceptor would
// (stream RPCs do not pass through it).
func listed(req any) error {
	if err := validate.Request(req); err != nil {
		return invalid(err.Error())
	}
	return nil
}

func (s *Service) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	lr := &runtimeapi.ListPodSandboxRequest{Filter: req.GetFilter()}
	if err := listed(lr); err != nil {
		return err
	}
	return sendRaw(s.podItems(lr.GetFilter()), func(c [][]byte) error {
		return stream.Send(rawList(&runtimeapi.StreamPodSandboxesResponse{}, c))
	})
}

func (s *Service) StreamContainers(req *runtimeapi.StreamContainersRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	lr := &runtimeapi.ListContainersRequest{Filter: req.GetFilter()}
	if err := listed(lr); err != nil {
		return err
	}
	return sendRaw(s.containerItems(lr.GetFilter()), func(c [][]byte) error {
		return stream.Send(rawList(&runtimeapi.StreamContainersResponse{}, c))
	})
}

func (s *Service) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	lr := &runtimeapi.ListContainerStatsRequest{Filter: req.GetFilter()}
	if err := listed(lr); err != nil {
		return err
	}
	resp, err := s.ListContainerStats(stream.Context(), lr)
	if err != nil {
		return err
	}
	return sendChunks(resp.GetStats(), func(c []*runtimeapi.ContainerStats) error {
		return stream.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: c})
	})
}

func (s *Service) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	lr := &runtimeapi.ListPodSandboxStatsRequest{Filter: req.GetFilter()}
	if err := listed(lr); err != nil {
		return err
	}
	resp, err := s.ListPodSandboxStats(stream.Context(), lr)
	if err != nil {
		return err
	}
	return sendChunks(resp.GetStats(), func(c []*runtimeapi.PodSandboxStats) error {
		return stream.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: c})
	})
}

func (s *Service) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	resp, err := s.ListPodSandboxMetrics(stream.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		return err
	}
	return sendChunks(resp.GetPodMetrics(), func(c []*runtimeapi.PodSandboxMetrics) error {
		return stream.Send(&runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: c})
	})
}

func (s *Service) StreamImages(req *runtimeapi.StreamImagesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	lr := &runtimeapi.ListImagesRequest{Filter: req.GetFilter()}
	if err := listed(lr); err != nil {
		return err
	}
	resp, err := s.ListImages(stream.Context(), lr)
	if err != nil {
		return err
	}
	return sendChunks(resp.GetImages(), func(c []*runtimeapi.Image) error {
		return stream.Send(&runtimeapi.StreamImagesResponse{Images: c})
	})
}
