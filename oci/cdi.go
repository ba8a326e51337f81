package oci

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// CDI devices (the Container Device Interface): what DRA drivers and device
// plugins hand to the runtime as fully qualified names
// ("vendor.com/class=name") in ContainerConfig.CDI_devices, or in the older
// "cdi.k8s.io/…" annotations. Each name is resolved in the CDI specs of the
// node's spec directories (written by the node's drivers, root's to
// write) and its edits — device nodes with their cgroup rules, mounts,
// environment, hooks — are applied to the OCI spec by the CDI library, as
// containerd and CRI-O do.

// DefaultCDISpecDirs are CDI's own defaults: static specs, then those
// drivers generate at run time.
var DefaultCDISpecDirs = []string{"/etc/cdi", "/var/run/cdi"}

// CDIRegistry resolves CDI devices against the specs of a set of
// directories, read again for every container that asks for a device (a
// driver may have written a spec a moment ago); containers without CDI
// devices never read them.
type CDIRegistry struct {
	dirs  []string
	once  sync.Once
	cache *cdi.Cache
}

// NewCDIRegistry resolves devices in dirs (nil or empty: none is ever found).
func NewCDIRegistry(dirs []string) *CDIRegistry {
	return &CDIRegistry{dirs: dirs}
}

// CDIDeviceNames are the CDI devices a container asks for: the CRI field
// first, then the annotations, without repeats.
func CDIDeviceNames(cfg *runtimeapi.ContainerConfig) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, d := range cfg.GetCDIDevices() {
		add(d.GetName())
	}
	_, annotated, err := cdi.ParseAnnotations(cfg.GetAnnotations())
	if err != nil {
		return nil, fmt.Errorf("CDI device annotations: %v: %w", err, ErrInvalidArgument)
	}
	for _, n := range annotated {
		add(n)
	}
	for _, n := range names {
		if _, _, _, err := parser.ParseQualifiedName(n); err != nil {
			return nil, fmt.Errorf("CDI device %q: %v (want vendor.com/class=name): %w", n, err, ErrInvalidArgument)
		}
	}
	return names, nil
}

// Inject applies the edits of the CDI devices cfg asks for to spec. A
// device no spec defines is InvalidArgument, naming the directories
// searched and any spec file that failed to load.
func (r *CDIRegistry) Inject(spec *specs.Spec, cfg *runtimeapi.ContainerConfig) error {
	names, err := CDIDeviceNames(cfg)
	if err != nil || len(names) == 0 {
		return err
	}
	if len(r.dirs) == 0 {
		return fmt.Errorf("CDI devices %s requested, but no CDI spec directory is configured (cdi_spec_dirs): %w",
			strings.Join(names, ", "), ErrInvalidArgument)
	}
	r.once.Do(func() {
		r.cache, _ = cdi.NewCache(cdi.WithSpecDirs(r.dirs...), cdi.WithAutoRefresh(false)) // never fails
	})
	// Refresh's error only collects broken spec files; devices of the good
	// ones still resolve. The broken ones are named if a device is missing.
	_ = r.cache.Refresh()
	unresolved, err := r.cache.InjectDevices(spec, names...)
	if len(unresolved) > 0 {
		msg := fmt.Sprintf("CDI devices %s are not defined by any CDI spec in %s", strings.Join(unresolved, ", "), strings.Join(r.dirs, ", "))
		var bad []string
		for file, errs := range r.cache.GetErrors() {
			bad = append(bad, fmt.Sprintf("%s: %v", file, errors.Join(errs...)))
		}
		if len(bad) > 0 {
			msg += " (specs that failed to load: " + strings.Join(bad, "; ") + ")"
		}
		return fmt.Errorf("%s: %w", msg, ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("apply CDI devices %s: %v: %w", strings.Join(names, ", "), err, ErrInvalidArgument)
	}
	return nil
}
