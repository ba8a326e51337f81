package sandbox

import runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

// The daemon's own log lines name pods as the CRI layer's do
// ("pod=namespace/name pod_id=..."), so that one grep finds every line of a
// pod, those of background events (a container exit, a stop) included.

// podLogName is "namespace/name" of the pod's metadata.
func podLogName(cfg *runtimeapi.PodSandboxConfig) string {
	m := cfg.GetMetadata()
	if m.GetNamespace() == "" {
		return m.GetName()
	}
	return m.GetNamespace() + "/" + m.GetName()
}

// podLogNameByID is podLogName of a known pod, or "" for one that is gone.
func (r *Runtime) podLogNameByID(id string) string {
	r.mu.RLock()
	p := r.pods[id]
	r.mu.RUnlock()
	if p == nil {
		return ""
	}
	return podLogName(p.Config)
}
