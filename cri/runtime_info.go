package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const runtimeName = "peapod"

func (s *Service) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       runtimeName,
		RuntimeVersion:    s.info.Version,
		RuntimeApiVersion: "v1",
	}, nil
}

func (s *Service) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if s.info.NetworkReady != nil {
		if err := s.info.NetworkReady(); err != nil {
			network.Status, network.Reason, network.Message = false, "NetworkPluginNotReady", err.Error()
		}
	}
	var info map[string]string
	if req.GetVerbose() {
		info = s.statusInfo()
	}
	return &runtimeapi.StatusResponse{
		Info: info,
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			network,
		}},
		RuntimeHandlers: s.runtimeHandlers(),
		Features:        &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true, MountOptions: true},
	}, nil
}

// runtimeHandlers reports every handler with its features: the embedded
// runtime's, or what an external runtime's `features` lists.
func (s *Service) runtimeHandlers() []*runtimeapi.RuntimeHandler {
	var hs []*runtimeapi.RuntimeHandler
	for _, name := range s.runtime.Handlers() {
		f := s.runtime.HandlerFeatures(name)
		hs = append(hs, &runtimeapi.RuntimeHandler{Name: name, Features: &runtimeapi.RuntimeHandlerFeatures{
			RecursiveReadOnlyMounts: f.RecursiveReadOnlyMounts, UserNamespaces: f.UserNamespaces}})
	}
	return hs
}

func (s *Service) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.info.CgroupDriver == "systemd" {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver}}, nil
}

// UpdateRuntimeConfig accepts the pod CIDR kubelet sends; the built-in
// network that will use it comes with the networking issue.
func (s *Service) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	if cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr(); cidr != "" {
		s.log.Info("kubelet sent pod CIDR; the built-in network does not use it yet", "pod_cidr", cidr)
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
