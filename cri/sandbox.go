package cri

import (
	"context"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox"
)

func (s *Service) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	p, err := s.runtime.RunPod(ctx, req.GetConfig(), req.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: p.ID}, nil
}

func (s *Service) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod sandbox ID is empty")
	}
	if err := s.runtime.StopPod(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (s *Service) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("pod sandbox ID is empty")
	}
	if err := s.runtime.RemovePod(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	p, err := s.runtime.Pod(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(&p)}
	if req.GetVerbose() {
		resp.Info = podInfo(&p)
	}
	return resp, nil
}

func podStatus(p *sandbox.Pod) *runtimeapi.PodSandboxStatus {
	ns := p.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	return &runtimeapi.PodSandboxStatus{
		Id:             p.ID,
		Metadata:       p.Config.GetMetadata(),
		State:          podState(p.State),
		CreatedAt:      p.CreatedAt,
		Network:        podNetworkStatus(p.IPs),
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: ns}},
		Labels:         p.Config.GetLabels(),
		Annotations:    p.Config.GetAnnotations(),
		RuntimeHandler: p.RuntimeHandler,
	}
}

func podNetworkStatus(ips []string) *runtimeapi.PodSandboxNetworkStatus {
	st := &runtimeapi.PodSandboxNetworkStatus{}
	for i, ip := range ips {
		if i == 0 {
			st.Ip = ip
		} else {
			st.AdditionalIps = append(st.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}

func podState(s sandbox.PodState) runtimeapi.PodSandboxState {
	if s == sandbox.PodReady {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// ListPodSandbox answers with the kept encodings of the items
// (listcache.go): the reply's Items field is empty in this process.
func (s *Service) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return rawList(&runtimeapi.ListPodSandboxResponse{}, s.podItems(req.GetFilter())), nil
}

// podItems are the encodings of the pods that match f.
func (s *Service) podItems(f *runtimeapi.PodSandboxFilter) [][]byte {
	pods := s.runtime.Pods()
	items := make([][]byte, 0, len(pods))
	for _, p := range pods {
		if f != nil {
			if f.Id != "" && !matchID(p.ID, f.Id) {
				continue
			}
			if f.State != nil && podState(p.State) != f.State.State {
				continue
			}
			if !matchLabels(p.Config.GetLabels(), f.LabelSelector) {
				continue
			}
		}
		state := podState(p.State)
		items = append(items, s.podCache.get(p.ID, int32(state), func() proto.Message {
			return &runtimeapi.PodSandbox{
				Id:             p.ID,
				Metadata:       p.Config.GetMetadata(),
				State:          state,
				CreatedAt:      p.CreatedAt,
				Labels:         p.Config.GetLabels(),
				Annotations:    p.Config.GetAnnotations(),
				RuntimeHandler: p.RuntimeHandler,
			}
		}))
	}
	if f == nil || proto.Equal(f, &runtimeapi.PodSandboxFilter{}) {
		ids := make([]string, len(pods))
		for i := range pods {
			ids[i] = pods[i].ID
		}
		s.podCache.prune(ids)
	}
	return items
}
