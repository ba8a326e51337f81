package main

import (
	"log/slog"

	"github.com/peapod-cri/peapod/config"
	"github.com/peapod-cri/peapod/sandbox"
)

// warnNetworkChange says loudly when running pods were set up by another
// network backend than the one new pods get: the `network` key or the CNI
// config dir changed (e.g. a package dropped a conflist into cni_conf_dir
// and network = auto followed it). Those pods keep their network and are
// torn down through their own backend; only new pods differ.
func warnNetworkChange(log *slog.Logger, cfg config.Config, kind string, pods []sandbox.Pod) {
	var others []string
	for _, p := range pods {
		if p.State == sandbox.PodReady && p.NetworkBackend != "" && p.NetworkBackend != kind {
			others = append(others, p.ID)
		}
	}
	if len(others) == 0 {
		return
	}
	log.Warn("POD NETWORK BACKEND CHANGED: new pods get "+kind+", running pods were set up by the other backend "+
		"and keep it until removed; set `network` in the config to choose one explicitly",
		"network", cfg.Network, "new_pods", kind, "cni_conf_dir", cfg.CNIConfDir, "pods_on_other_backend", len(others), "pods", others)
}
