package nri

import (
	"strconv"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/sandbox/store"
)

// podSandbox describes a pod to the plugins.
func podSandbox(p *store.Pod) *api.PodSandbox {
	m := p.Config.GetMetadata()
	lin := p.Config.GetLinux()
	ps := &api.PodSandbox{
		Id:             p.ID,
		Name:           m.GetName(),
		Uid:            m.GetUid(),
		Namespace:      m.GetNamespace(),
		Labels:         p.Config.GetLabels(),
		Annotations:    p.Config.GetAnnotations(),
		RuntimeHandler: p.RuntimeHandler,
		Ips:            p.IPs,
		Linux: &api.LinuxPodSandbox{
			CgroupParent: p.CgroupParent,
			CgroupsPath:  p.Cgroup,
			PodOverhead:  nriResources(lin.GetOverhead()),
			PodResources: nriResources(lin.GetResources()),
		},
	}
	if p.PausePID > 0 {
		ps.Pid = uint32(p.PausePID)
		nso := lin.GetSecurityContext().GetNamespaceOptions()
		ns := func(typ, kind string) {
			ps.Linux.Namespaces = append(ps.Linux.Namespaces, &api.LinuxNamespace{Type: typ, Path: "/proc/" + strconv.Itoa(p.PausePID) + "/ns/" + kind})
		}
		if nso.GetNetwork() != runtimeapi.NamespaceMode_NODE {
			ns("network", "net")
			ns("uts", "uts")
		}
		if nso.GetIpc() != runtimeapi.NamespaceMode_NODE {
			ns("ipc", "ipc")
		}
	}
	return ps
}

// container describes a container to the plugins: its record, and what
// its OCI spec says when there is one (nil: the record only).
func container(c *store.Container, spec *specs.Spec) *api.Container {
	ac := &api.Container{
		Id:            c.ID,
		PodSandboxId:  c.PodID,
		Name:          c.Config.GetMetadata().GetName(),
		State:         containerState(c.State),
		Labels:        c.Config.GetLabels(),
		Annotations:   c.Config.GetAnnotations(),
		CreatedAt:     c.CreatedAt,
		StartedAt:     c.StartedAt,
		FinishedAt:    c.FinishedAt,
		ExitCode:      c.ExitCode,
		StatusReason:  c.Reason,
		StatusMessage: c.Message,
	}
	if c.PID > 0 {
		ac.Pid = uint32(c.PID)
	}
	if spec == nil {
		return ac
	}
	if spec.Annotations != nil {
		ac.Annotations = spec.Annotations
	}
	ac.Mounts = api.FromOCIMounts(spec.Mounts)
	ac.Hooks = api.FromOCIHooks(spec.Hooks)
	if pr := spec.Process; pr != nil {
		ac.Args = pr.Args
		ac.Env = pr.Env
		ac.User = &api.User{Uid: pr.User.UID, Gid: pr.User.GID, AdditionalGids: pr.User.AdditionalGids}
		for _, rl := range pr.Rlimits {
			ac.Rlimits = append(ac.Rlimits, &api.POSIXRlimit{Type: rl.Type, Hard: rl.Hard, Soft: rl.Soft})
		}
	}
	if l := spec.Linux; l != nil {
		ac.Linux = &api.LinuxContainer{
			Namespaces:    api.FromOCILinuxNamespaces(l.Namespaces),
			Devices:       api.FromOCILinuxDevices(l.Devices),
			Resources:     api.FromOCILinuxResources(l.Resources, nil),
			CgroupsPath:   l.CgroupsPath,
			Sysctl:        l.Sysctl,
		}
		if l.Seccomp != nil {
			ac.Linux.SeccompPolicy = api.FromOCILinuxSeccomp(l.Seccomp)
		}
		if pr := spec.Process; pr != nil {
			ac.Linux.OomScoreAdj = api.Int(pr.OOMScoreAdj)
			ac.Linux.IoPriority = api.FromOCILinuxIOPriority(pr.IOPriority)
			ac.Linux.Scheduler = api.FromOCILinuxScheduler(pr.Scheduler)
		}
	}
	return ac
}

func containerState(s store.ContainerState) api.ContainerState {
	switch s {
	case store.ContainerCreated:
		return api.ContainerState_CONTAINER_CREATED
	case store.ContainerRunning:
		return api.ContainerState_CONTAINER_RUNNING
	case store.ContainerExited:
		return api.ContainerState_CONTAINER_STOPPED
	}
	return api.ContainerState_CONTAINER_UNKNOWN
}

// nriResources is a CRI resource request in NRI's terms; nil for nil.
func nriResources(r *runtimeapi.LinuxContainerResources) *api.LinuxResources {
	if r == nil {
		return nil
	}
	out := &api.LinuxResources{
		Cpu: &api.LinuxCPU{
			Cpus: r.GetCpusetCpus(),
			Mems: r.GetCpusetMems(),
		},
		Memory:  &api.LinuxMemory{},
		Unified: r.GetUnified(),
	}
	if v := r.GetCpuShares(); v != 0 {
		out.Cpu.Shares = api.UInt64(uint64(v))
	}
	if v := r.GetCpuQuota(); v != 0 {
		out.Cpu.Quota = api.Int64(v)
	}
	if v := r.GetCpuPeriod(); v != 0 {
		out.Cpu.Period = api.UInt64(uint64(v))
	}
	if v := r.GetMemoryLimitInBytes(); v != 0 {
		out.Memory.Limit = api.Int64(v)
	}
	if v := r.GetMemorySwapLimitInBytes(); v != 0 {
		out.Memory.Swap = api.Int64(v)
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, &api.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// mergeUpdate is base (nil: none) with the fields a plugin's resources
// set replaced: what CRI's resources can say of them.
func mergeUpdate(base *runtimeapi.LinuxContainerResources, r *api.LinuxResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if base != nil {
		out = cloneResources(base)
	}
	if r == nil {
		return out
	}
	if cpu := r.GetCpu(); cpu != nil {
		if v := cpu.GetShares(); v != nil {
			out.CpuShares = int64(v.GetValue())
		}
		if v := cpu.GetQuota(); v != nil {
			out.CpuQuota = v.GetValue()
		}
		if v := cpu.GetPeriod(); v != nil {
			out.CpuPeriod = int64(v.GetValue())
		}
		if cpu.GetCpus() != "" {
			out.CpusetCpus = cpu.GetCpus()
		}
		if cpu.GetMems() != "" {
			out.CpusetMems = cpu.GetMems()
		}
	}
	if mem := r.GetMemory(); mem != nil {
		if v := mem.GetLimit(); v != nil {
			out.MemoryLimitInBytes = v.GetValue()
		}
		if v := mem.GetSwap(); v != nil {
			out.MemorySwapLimitInBytes = v.GetValue()
		}
	}
	if len(r.GetHugepageLimits()) > 0 {
		out.HugepageLimits = nil
		for _, h := range r.GetHugepageLimits() {
			out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
		}
	}
	if len(r.GetUnified()) > 0 {
		u := map[string]string{}
		for k, v := range out.Unified {
			u[k] = v
		}
		for k, v := range r.GetUnified() {
			u[k] = v
		}
		out.Unified = u
	}
	return out
}

func cloneResources(r *runtimeapi.LinuxContainerResources) *runtimeapi.LinuxContainerResources {
	return proto.Clone(r).(*runtimeapi.LinuxContainerResources)
}
