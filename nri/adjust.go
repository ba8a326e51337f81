package nri

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/nri/pkg/api"
	nrigen "github.com/containerd/nri/pkg/runtime-tools/generate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	rgen "github.com/opencontainers/runtime-tools/generate"
	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/cgroups"
)

// errUnsupported is an adjustment peapod does not make.
var errUnsupported = errors.New("not supported by peapod")

// hostFacts are the limits of the daemon's own process that no container
// may go past: lowering oom_score_adj and raising a hard rlimit need
// CAP_SYS_RESOURCE.
type hostFacts struct {
	oomScoreAdj    int
	hasSysResource bool
}

func readHostFacts() hostFacts {
	h := hostFacts{}
	if b, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
		h.oomScoreAdj, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	h.hasSysResource = effectiveCap(unix.CAP_SYS_RESOURCE)
	return h
}

// effectiveCap reads the process's effective capability set.
func effectiveCap(c int) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<uint(c)) != 0
		}
	}
	return false
}

// adjust applies a plugin's adjustment to spec with NRI's own generator
// (what containerd uses), after refusing what peapod does not do, and then
// checks the result as peapod checks a spec built from CRI: the caller
// validates it once more through libcontainer.
func (s *Server) adjust(spec *specs.Spec, adj *api.ContainerAdjustment) error {
	if adj == nil {
		return nil
	}
	if err := refuseUnsupported(adj); err != nil {
		return err
	}
	if err := checkMounts(adj.GetMounts()); err != nil {
		return err
	}
	if err := checkHooks(adj.GetHooks()); err != nil {
		return err
	}
	rg := rgen.NewFromSpec(spec)
	g := nrigen.SpecGenerator(&rg, nrigen.WithResourceChecker(cgroups.Check))
	if err := g.Adjust(adj); err != nil {
		return err
	}
	if err := s.checkLimits(spec); err != nil {
		return err
	}
	return nil
}

// refuseUnsupported refuses what peapod cannot honour rather than ignore
// it: the cgroup path and namespaces are the pod's (peapod removes and
// joins them by their place), block I/O and RDT classes need a class
// configuration peapod has not, and network devices and CDI devices
// through NRI are not wired.
func refuseUnsupported(adj *api.ContainerAdjustment) error {
	l := adj.GetLinux()
	switch {
	case l.GetCgroupsPath() != "":
		return fmt.Errorf("cgroups path: %w (the pod's cgroup is peapod's)", errUnsupported)
	case len(l.GetNamespaces()) > 0:
		return fmt.Errorf("namespaces: %w (a container joins its pod's)", errUnsupported)
	case len(l.GetNetDevices()) > 0:
		return fmt.Errorf("network devices: %w", errUnsupported)
	case len(adj.GetCDIDevices()) > 0:
		return fmt.Errorf("CDI devices: %w (ask for them in the CRI config's CDI_devices)", errUnsupported)
	case l.GetResources().GetBlockioClass() != nil:
		return fmt.Errorf("block I/O class: %w", errUnsupported)
	case l.GetResources().GetRdtClass() != nil, rdt(l.GetRdt()):
		return fmt.Errorf("RDT: %w", errUnsupported)
	}
	return nil
}

// rdt reports an RDT adjustment that asks for something (the merged
// adjustment carries an empty one).
func rdt(r *api.LinuxRdt) bool {
	return r.GetClosId() != nil || r.GetSchemata() != nil || r.GetEnableMonitoring() != nil
}

// checkMounts refuses a mount with a relative or climbing destination, and
// a bind whose source is not an existing absolute path (a missing source
// would fail the start less clearly, or be made by runc as a directory).
func checkMounts(mounts []*api.Mount) error {
	for _, m := range mounts {
		if d := m.GetDestination(); !filepath.IsAbs(d) || slices.Contains(strings.Split(d, "/"), "..") {
			return fmt.Errorf("mount destination %q: must be an absolute path without ..", m.GetDestination())
		}
		if !isBind(m) {
			continue
		}
		if !filepath.IsAbs(m.GetSource()) {
			return fmt.Errorf("bind mount source %q: must be an absolute host path", m.GetSource())
		}
		if _, err := os.Stat(m.GetSource()); err != nil {
			return fmt.Errorf("bind mount source: %w", err)
		}
	}
	return nil
}

func isBind(m *api.Mount) bool {
	if m.GetType() == "bind" {
		return true
	}
	for _, o := range m.GetOptions() {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// checkHooks refuses a hook whose program is not an absolute path to a
// file (runc would fail the start).
func checkHooks(h *api.Hooks) error {
	if h == nil {
		return nil
	}
	for _, list := range [][]*api.Hook{h.Prestart, h.CreateRuntime, h.CreateContainer, h.StartContainer, h.Poststart, h.Poststop} {
		for _, hk := range list {
			if !filepath.IsAbs(hk.GetPath()) {
				return fmt.Errorf("hook path %q: must be absolute", hk.GetPath())
			}
			if st, err := os.Stat(hk.GetPath()); err != nil {
				return fmt.Errorf("hook: %w", err)
			} else if !st.Mode().IsRegular() {
				return fmt.Errorf("hook %s: not a regular file", hk.GetPath())
			}
		}
	}
	return nil
}

// checkLimits keeps the adjusted spec within what the daemon may give
// without CAP_SYS_RESOURCE: oom_score_adj never below its own (raised to
// it, as a CRI request is), and no hard rlimit above its own.
func (s *Server) checkLimits(spec *specs.Spec) error {
	if spec.Process == nil {
		return nil
	}
	if adj := spec.Process.OOMScoreAdj; adj != nil && *adj < s.host.oomScoreAdj && !s.host.hasSysResource {
		v := s.host.oomScoreAdj
		spec.Process.OOMScoreAdj = &v
	}
	if s.host.hasSysResource {
		return nil
	}
	for _, rl := range spec.Process.Rlimits {
		res, ok := rlimitResource[rl.Type]
		if !ok {
			return fmt.Errorf("rlimit %q: unknown", rl.Type)
		}
		var own unix.Rlimit
		if err := unix.Getrlimit(res, &own); err != nil {
			return fmt.Errorf("rlimit %s: %w", rl.Type, err)
		}
		if rl.Hard > own.Max || rl.Soft > rl.Hard {
			return fmt.Errorf("rlimit %s soft %d hard %d: above the daemon's hard limit %d (raising it needs CAP_SYS_RESOURCE) or soft above hard", rl.Type, rl.Soft, rl.Hard, own.Max)
		}
	}
	return nil
}

var rlimitResource = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}
