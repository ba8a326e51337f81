package main

import (
	"runtime"

	"github.com/peapod-cri/peapod/cgroups"
	"github.com/peapod-cri/peapod/config"
	"github.com/peapod-cri/peapod/metrics"
	"github.com/peapod-cri/peapod/network"
	"github.com/peapod-cri/peapod/sandbox"
)

// stateCounts counts the runtime's pods and containers by state, for the
// metrics collector (read at each scrape).
func stateCounts(rt *sandbox.Runtime) metrics.StateCounts {
	return func() (map[string]int, map[string]int) {
		pods := map[string]int{string(sandbox.PodReady): 0, string(sandbox.PodNotReady): 0}
		for _, p := range rt.Pods() {
			pods[string(p.State)]++
		}
		ctrs := map[string]int{string(sandbox.ContainerCreated): 0, string(sandbox.ContainerRunning): 0, string(sandbox.ContainerExited): 0}
		for _, c := range rt.Containers() {
			ctrs[string(c.State)]++
		}
		return pods, ctrs
	}
}

// runtimeInfo is what the verbose CRI Status reports beside the config:
// what peapod found on the host and chose at start.
func runtimeInfo(cfg config.Config, net *network.Reloadable, streamAddr string) map[string]any {
	info := map[string]any{
		"version":          version,
		"goVersion":        runtime.Version(),
		"cgroupsMode":      cgroups.Mode(),
		"network":          net.Kind(),
		"streamingAddress": streamAddr,
		"registriesConf":   registriesConf(cfg.RegistriesConf),
		"authFile":         cfg.AuthFile,

		"registriesConfDir": cfg.RegistriesConfDir,
		"registriesD":       cfg.RegistriesD,
		"signaturePolicy":   cfg.SignaturePolicy,
	}
	if err := net.Ready(); err != nil {
		info["networkNotReady"] = err.Error()
	}
	if cfg.CgroupDriver == "systemd" {
		info["systemdCgroups"] = cgroups.SystemdStatus()
	}
	return info
}
