package cri

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/peapod-cri/peapod/sandbox"
)

// The verbose info of the status calls: what an operator needs to debug a
// pod or container by hand (as `crictl inspect`/`inspectp` show it), as
// JSON under the key "info", as containerd reports it.

// statusInfo is the verbose Status info: each entry of Info.Verbose as JSON
// under its key ("config", "runtime").
func (s *Service) statusInfo() map[string]string {
	if s.info.Verbose == nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range s.info.Verbose() {
		data, err := json.Marshal(v)
		if err != nil {
			data, _ = json.Marshal(fmt.Sprintf("cannot encode: %v", err))
		}
		out[k] = string(data)
	}
	return out
}

func podInfo(p *sandbox.Pod) map[string]string {
	info := map[string]any{
		"pid":          p.PausePID,
		"pidHolder":    p.PIDHolder,
		"holderStart":  p.HolderStart,
		"cgroupParent": p.CgroupParent,
		"cgroup":       p.Cgroup,
		"podDir":       p.Dir,
		"ips":          p.IPs,
		"config":       p.Config,
		// the network backend that set the pod up and tears it down
		"networkBackend": p.NetworkBackend,
	}
	if p.NotReadyReason != "" {
		info["notReadyReason"] = p.NotReadyReason
	}
	if p.PausePID > 0 {
		info["netns"] = fmt.Sprintf("/proc/%d/ns/net", p.PausePID)
	}
	return infoJSON(info)
}

func containerInfo(c *sandbox.Container) map[string]string {
	info := map[string]any{
		"pid":       c.PID,
		"sandboxID": c.PodID,
		"rootfs":    c.Rootfs,
		"bundle":    c.Bundle,
		"logPath":   c.LogPath,
		"image":     c.Image,
		"config":    c.Config,
	}
	// The OCI spec as written for libcontainer; its cgroupsPath is the
	// container's cgroup.
	if data, err := os.ReadFile(filepath.Join(c.Bundle, "config.json")); err == nil {
		info["runtimeSpec"] = json.RawMessage(data)
		var spec struct {
			Linux struct {
				CgroupsPath string `json:"cgroupsPath"`
			} `json:"linux"`
		}
		if json.Unmarshal(data, &spec) == nil {
			info["cgroupsPath"] = spec.Linux.CgroupsPath
		}
	} else {
		info["runtimeSpecError"] = err.Error()
	}
	return infoJSON(info)
}

func infoJSON(v map[string]any) map[string]string {
	data, err := json.Marshal(v)
	if err != nil {
		data, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	return map[string]string{"info": string(data)}
}
