package sandbox

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/oci"
	"github.com/peapod-cri/peapod/sandbox/ociruntime"
)

// Handler is one runtime handler besides the default: its name, and the
// OCI runtime binary that runs its containers ("": the embedded
// libcontainer, as for the default handler).
type Handler struct {
	Name    string
	OCIPath string
}

// handler is a Handler as the runtime uses it.
type handler struct {
	name     string
	oci      *ociruntime.Runtime // nil: embedded
	features ociruntime.Features
}

// HandlerFeatures are what Status reports of a handler.
type HandlerFeatures struct {
	RecursiveReadOnlyMounts bool
	UserNamespaces          bool
}

// openHandlers probes each external runtime's features once: they do not
// change while the binary stays.
func (r *Runtime) openHandlers() {
	r.handlers = map[string]*handler{}
	for _, h := range r.opts.Handlers {
		hd := &handler{name: h.Name}
		if h.OCIPath != "" {
			hd.oci = &ociruntime.Runtime{
				Path:          h.OCIPath,
				Root:          filepath.Join(r.opts.State, "oci", h.Name),
				SystemdCgroup: r.opts.CgroupDriver == "systemd",
			}
			f, err := ociruntime.Probe(context.Background(), h.OCIPath)
			if err != nil {
				r.log.Warn("the OCI runtime reports no features: the handler claims neither user namespaces nor recursive read-only mounts",
					"handler", h.Name, "runtime", h.OCIPath, "err", err)
			}
			hd.features = f
		}
		r.handlers[h.Name] = hd
	}
}

// Handlers are the runtime handler names pods may ask for: "" (the
// default) first, then the configured ones in order.
func (r *Runtime) Handlers() []string {
	if r == nil { // a Service without a runtime (unit tests of cri)
		return []string{""}
	}
	names := []string{""}
	for _, h := range r.opts.Handlers {
		names = append(names, h.Name)
	}
	return names
}

// HandlerFeatures reports what the handler's runtime supports: the
// embedded one everything the host allows, an external one what its
// `features` lists and the host allows.
func (r *Runtime) HandlerFeatures(name string) HandlerFeatures {
	userns := r.UserNamespaces()
	if h := r.handlerNamed(name); h != nil && h.oci != nil {
		return HandlerFeatures{RecursiveReadOnlyMounts: h.features.RecursiveReadOnlyMounts, UserNamespaces: userns && h.features.UserNamespaces}
	}
	return HandlerFeatures{RecursiveReadOnlyMounts: true, UserNamespaces: userns}
}

func (r *Runtime) handlerNamed(name string) *handler {
	if r == nil || r.handlers == nil {
		return nil
	}
	return r.handlers[name]
}

// knownHandler reports whether pods may ask for handler name.
func (r *Runtime) knownHandler(name string) bool {
	return name == "" || name == "runc" || slices.ContainsFunc(r.opts.Handlers, func(h Handler) bool { return h.Name == name })
}

// ociOf is the external runtime of a pod's containers, nil for the
// embedded one.
func (r *Runtime) ociOf(podHandler string) *ociruntime.Runtime {
	if h := r.handlerNamed(podHandler); h != nil {
		return h.oci
	}
	return nil
}

// ociOfContainer is ociOf for the pod of container c.
func (r *Runtime) ociOfContainer(c *container) *ociruntime.Runtime {
	r.mu.RLock()
	p := r.pods[c.PodID]
	r.mu.RUnlock()
	if p == nil {
		return nil
	}
	return r.ociOf(p.RuntimeHandler)
}

// checkHandlerFeatures refuses a pod its handler cannot run as asked: a
// user namespace on a runtime that does not support one.
func (r *Runtime) checkHandlerFeatures(cfg *runtimeapi.PodSandboxConfig, handler string) error {
	if oci.PodUserns(cfg) != nil && !r.HandlerFeatures(handler).UserNamespaces {
		return fmt.Errorf("runtime handler %q does not support user namespaces: %w", handler, ErrInvalidArgument)
	}
	return nil
}

// checkMountFeatures refuses a recursive read-only mount on a handler
// whose runtime does not list "rro": it would be made read-only at the
// top only, or refused late by the runtime (containerd refuses it too).
func (r *Runtime) checkMountFeatures(cfg *runtimeapi.ContainerConfig, handler string) error {
	if r.HandlerFeatures(handler).RecursiveReadOnlyMounts {
		return nil
	}
	for _, m := range cfg.GetMounts() {
		if m.GetRecursiveReadOnly() {
			return fmt.Errorf("mount at %s: runtime handler %q does not support recursive read-only mounts: %w", m.GetContainerPath(), handler, ErrInvalidArgument)
		}
	}
	return nil
}
