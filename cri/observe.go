package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/metrics"
)

// requestIDHeader carries a call's request ID back to the client, so a
// crictl or kubelet error can be matched with the daemon's log line.
const requestIDHeader = "peapod-request-id"

// UseMetrics records every CRI call in m from now on (before serving).
func (s *Service) UseMetrics(m *metrics.Metrics) { s.metrics = m }

// observeUnary gives each call a request ID, records it in the metrics,
// and logs it: every call at debug, each change (mutation) at info with the
// pod and container names, each failure at info (error for server faults)
// with its cause.
func (s *Service) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	id := newRequestID()
	_ = grpc.SetHeader(ctx, metadata.Pairs(requestIDHeader, id)) // best effort: a header is a courtesy
	method := methodName(info.FullMethod)
	log := s.log.With("request_id", id, "method", method)
	mutation := mutations[method]
	var subject []any
	if mutation {
		subject = s.subject(req) // before the call: a removed pod has no name afterwards
	}
	resp, err := handler(ctx, req)
	d := time.Since(start)
	if err != nil {
		err = toStatus(err)
	}
	s.metrics.CRIRequest(method, status.Code(err).String(), d)
	switch {
	case err != nil:
		logFailure(log, err, d, subject)
	case mutation:
		log.Info(method, append(subject, append(result(resp), "duration", d.Round(time.Microsecond))...)...)
	default:
		log.Debug("rpc", "duration", d)
	}
	return resp, err
}

// observeStream does the same for streaming calls (GetContainerEvents); the
// duration is the stream's whole life.
func (s *Service) observeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	id := newRequestID()
	_ = ss.SetHeader(metadata.Pairs(requestIDHeader, id))
	method := methodName(info.FullMethod)
	log := s.log.With("request_id", id, "method", method)
	log.Debug("stream opened")
	err := handler(srv, ss)
	d := time.Since(start)
	if err != nil {
		err = toStatus(err)
	}
	s.metrics.CRIRequest(method, status.Code(err).String(), d)
	if err != nil {
		logFailure(log, err, d, nil)
	} else {
		log.Debug("stream closed", "duration", d)
	}
	return err
}

// logFailure logs a failed call; codes that mean a fault of peapod or the
// host (Unknown, Internal, DataLoss) at error level, the rest (a missing
// pod, a bad request, a caller that gave up) at info.
func logFailure(log *slog.Logger, err error, d time.Duration, subject []any) {
	level := slog.LevelInfo
	switch status.Code(err).String() {
	case "Unknown", "Internal", "DataLoss":
		level = slog.LevelError
	}
	st, _ := status.FromError(err)
	attrs := append(subject, "code", st.Code().String(), "err", st.Message(), "duration", d)
	log.Log(context.Background(), level, "rpc failed", attrs...)
}

// mutations are the calls that change the node; each success is logged at
// info level.
var mutations = map[string]bool{
	"RunPodSandbox": true, "StopPodSandbox": true, "RemovePodSandbox": true,
	"CreateContainer": true, "StartContainer": true, "StopContainer": true, "RemoveContainer": true,
	"UpdateContainerResources": true, "UpdatePodSandboxResources": true, "UpdateRuntimeConfig": true,
	"ReopenContainerLog": true, "PullImage": true, "RemoveImage": true,
}

// subject names what a call acts on: pod and container by name
// (namespace/name) and ID, or the image.
func (s *Service) subject(req any) []any {
	switch r := req.(type) {
	case *runtimeapi.RunPodSandboxRequest:
		return []any{"pod", metaName(r.GetConfig().GetMetadata())}
	case *runtimeapi.StopPodSandboxRequest:
		return s.podSubject(r.GetPodSandboxId())
	case *runtimeapi.RemovePodSandboxRequest:
		return s.podSubject(r.GetPodSandboxId())
	case *runtimeapi.UpdatePodSandboxResourcesRequest:
		return s.podSubject(r.GetPodSandboxId())
	case *runtimeapi.CreateContainerRequest:
		return append(s.podSubject(r.GetPodSandboxId()), "container", r.GetConfig().GetMetadata().GetName(),
			"image", r.GetConfig().GetImage().GetImage())
	case interface{ GetContainerId() string }: // Start, Stop, Remove, Update, ReopenLog
		return s.containerSubject(r.GetContainerId())
	case *runtimeapi.PullImageRequest:
		return []any{"image", r.GetImage().GetImage()}
	case *runtimeapi.RemoveImageRequest:
		return []any{"image", r.GetImage().GetImage()}
	}
	return nil
}

func (s *Service) podSubject(id string) []any {
	p, err := s.runtime.Pod(id)
	if err != nil {
		return []any{"pod_id", id}
	}
	return []any{"pod", metaName(p.Config.GetMetadata()), "pod_id", p.ID}
}

func (s *Service) containerSubject(id string) []any {
	c, err := s.runtime.Container(id)
	if err != nil {
		return []any{"container_id", id}
	}
	out := []any{"container", c.Config.GetMetadata().GetName(), "container_id", c.ID}
	if p, err := s.runtime.Pod(c.PodID); err == nil {
		out = append([]any{"pod", metaName(p.Config.GetMetadata())}, out...)
	}
	return out
}

// metaName is "namespace/name", as kubectl shows a pod.
func metaName(m *runtimeapi.PodSandboxMetadata) string {
	if m.GetNamespace() == "" {
		return m.GetName()
	}
	return m.GetNamespace() + "/" + m.GetName()
}

// result names what a call created.
func result(resp any) []any {
	switch r := resp.(type) {
	case *runtimeapi.RunPodSandboxResponse:
		return []any{"pod_id", r.GetPodSandboxId()}
	case *runtimeapi.CreateContainerResponse:
		return []any{"container_id", r.GetContainerId()}
	case *runtimeapi.PullImageResponse:
		return []any{"image_id", r.GetImageRef()}
	}
	return nil
}

// methodName is the RPC's short name ("RunPodSandbox") from its full one
// ("/runtime.v1.RuntimeService/RunPodSandbox").
func methodName(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func newRequestID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b[:])
}
