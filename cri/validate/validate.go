// Package validate checks CRI requests at the boundary: every request
// passes through Request before its handler (cri/server.go), so a malformed
// or hostile field is refused with InvalidArgument before anything is made.
// Its own package, with few imports, so the fuzzer runs it fast.
package validate

import (
	"fmt"
	"maps"
	"net"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/sys/capability"
	"go.podman.io/image/v5/docker/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Limits on what a CRI request may carry. They follow Kubernetes' own, with room to spare, so that anything the
// kubelet sends fits:
//   - IDs: at most 128 of [A-Za-z0-9_-] (peapod's are 64 hex digits; crictl
//     sends prefixes). No separators, so an ID never becomes a path.
//   - names, namespaces, UIDs: at most 253 bytes (a DNS subdomain), no '/',
//     no control characters, not "." or "..".
//   - labels and annotations: keys at most 317 bytes (a qualified name),
//     each map at most 256 KiB in total (the API server's annotation limit).
//   - command, args and environment: no NUL; each string at most 128 KiB
//     (the kernel's MAX_ARG_STRLEN), all together at most 1 MiB (execve's
//     limit is a quarter of an 8 MiB stack: 2 MiB, with room for the image's).
//   - paths: absolute where the kernel needs them so, no ".." element, no NUL,
//     at most 4096 bytes (PATH_MAX); a log path is relative to the pod's log
//     directory and stays inside it.
//   - ports 1-65535 (host port 0: none); host IPs and DNS servers are IPs;
//     pod CIDRs parse as CIDRs.
//   - resources: no negative values; CPU period 1 ms-1 s, quota -1 or at
//     least 1 ms, shares 0 or 2-262144, OOM score adjustment -1000..1000;
//     cgroup file names plain names.
//   - users and groups: 0..2^32-2 (4294967295 is the kernel's "no ID").
const (
	maxIDLen         = 128
	maxNameLen       = 253
	maxLabelKeyLen   = 317
	maxMapBytes      = 256 << 10
	maxArgBytes      = 128 << 10
	maxArgsTotal     = 1 << 20
	maxPathLen       = 4096
	maxHostnameLen   = 64
	maxDNSSearches   = 32
	maxDNSSearchLen  = 2048 // all search domains together, as kubelet checks
	maxSysctlValue   = 4096
	maxListLen       = 1024 // mounts, devices, ports, groups, paths, capabilities
	maxImageRefLen   = 4096
	maxID            = 1<<32 - 2
	maxCPUShares     = 262144
	minCPUPeriod     = 1000
	maxCPUPeriod     = 1000000
	minCPUQuota      = 1000
	maxOOMScoreAdj   = 1000
	maxCgroupFileLen = 255
)

var (
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	sysctlComponent = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	capPattern      = regexp.MustCompile(`^[A-Z_]+$`)
	imageIDPattern  = regexp.MustCompile(`^(sha256:)?[a-f0-9]{64}$`)
	pageSizePattern = regexp.MustCompile(`^[0-9]+[KMG]B$`)
)

// Request checks a request's fields against the limits above. It returns
// nil for requests it has nothing to check; its errors say what to fix.
func Request(req any) error {
	switch r := req.(type) {
	case *runtimeapi.RunPodSandboxRequest:
		return validatePodConfig(r.GetConfig())
	case *runtimeapi.CreateContainerRequest:
		if err := validateID("pod sandbox ID", r.GetPodSandboxId()); err != nil {
			return err
		}
		return validateContainerConfig(r.GetConfig())
	case *runtimeapi.StopPodSandboxRequest:
		return validateID("pod sandbox ID", r.GetPodSandboxId())
	case *runtimeapi.RemovePodSandboxRequest:
		return validateID("pod sandbox ID", r.GetPodSandboxId())
	case *runtimeapi.PodSandboxStatusRequest:
		return validateID("pod sandbox ID", r.GetPodSandboxId())
	case *runtimeapi.PodSandboxStatsRequest:
		return validateID("pod sandbox ID", r.GetPodSandboxId())
	case *runtimeapi.StartContainerRequest:
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.StopContainerRequest:
		if r.GetTimeout() < 0 {
			return fmt.Errorf("stop timeout %d is negative", r.GetTimeout())
		}
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.RemoveContainerRequest:
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.ContainerStatusRequest:
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.ContainerStatsRequest:
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.ReopenContainerLogRequest:
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.UpdateContainerResourcesRequest:
		if err := validateID("container ID", r.GetContainerId()); err != nil {
			return err
		}
		return validateResources(r.GetLinux())
	case *runtimeapi.ExecSyncRequest:
		if r.GetTimeout() < 0 {
			return fmt.Errorf("exec timeout %d is negative", r.GetTimeout())
		}
		return firstErr(validateID("container ID", r.GetContainerId()), validateCommand("exec command", r.GetCmd(), true))
	case *runtimeapi.ExecRequest:
		return firstErr(validateID("container ID", r.GetContainerId()), validateCommand("exec command", r.GetCmd(), true))
	case *runtimeapi.AttachRequest:
		return validateID("container ID", r.GetContainerId())
	case *runtimeapi.PortForwardRequest:
		if err := validateID("pod sandbox ID", r.GetPodSandboxId()); err != nil {
			return err
		}
		for _, p := range r.GetPort() {
			if p < 1 || p > 65535 {
				return fmt.Errorf("port-forward port %d is outside 1-65535", p)
			}
		}
	case *runtimeapi.PullImageRequest:
		return validateImageSpec(r.GetImage())
	case *runtimeapi.ImageStatusRequest:
		return validateImageSpec(r.GetImage())
	case *runtimeapi.RemoveImageRequest:
		return validateImageSpec(r.GetImage())
	case *runtimeapi.UpdateRuntimeConfigRequest:
		if cidr := r.GetRuntimeConfig().GetNetworkConfig().GetPodCidr(); cidr != "" {
			for _, c := range strings.Split(cidr, ",") {
				if _, _, err := net.ParseCIDR(strings.TrimSpace(c)); err != nil {
					return fmt.Errorf("pod CIDR %q: %v", c, err)
				}
			}
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// validateID accepts the IDs peapod hands out and their prefixes.
func validateID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s is empty", what)
	case len(id) > maxIDLen:
		return fmt.Errorf("%s is %d bytes long; IDs are at most %d", what, len(id), maxIDLen)
	case !idPattern.MatchString(id):
		return fmt.Errorf("%s %q has characters other than letters, digits, '-' and '_'", what, id)
	}
	return nil
}

// validateName checks a metadata name, namespace or UID: peapod uses them
// in names of its own, never in paths, but they must stay printable.
func validateName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > maxNameLen:
		return fmt.Errorf("%s is %d bytes long; the limit is %d", what, len(s), maxNameLen)
	case s == "." || s == "..":
		return fmt.Errorf("%s %q is not a name", what, s)
	case strings.ContainsRune(s, '/'):
		return fmt.Errorf("%s %q contains '/'", what, s)
	case hasControl(s):
		return fmt.Errorf("%s %q contains control characters", what, s)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

func validatePodConfig(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return fmt.Errorf("pod sandbox config is missing")
	}
	m := cfg.GetMetadata()
	if m == nil {
		return fmt.Errorf("pod sandbox config has no metadata; it needs name, namespace and uid")
	}
	if err := firstErr(validateName("pod name", m.GetName()), validateName("pod namespace", m.GetNamespace()), validateName("pod uid", m.GetUid())); err != nil {
		return err
	}
	if h := cfg.GetHostname(); len(h) > maxHostnameLen || strings.ContainsAny(h, "/\x00") || hasControl(h) {
		return fmt.Errorf("hostname %.80q: at most %d characters, no '/' or control characters", h, maxHostnameLen)
	}
	if d := cfg.GetLogDirectory(); d != "" {
		if err := validateAbsPath("log directory", d); err != nil {
			return err
		}
	}
	if err := firstErr(validateMap("pod label", cfg.GetLabels()), validateMap("pod annotation", cfg.GetAnnotations())); err != nil {
		return err
	}
	if err := validateDNS(cfg.GetDnsConfig()); err != nil {
		return err
	}
	if len(cfg.GetPortMappings()) > maxListLen {
		return fmt.Errorf("%d port mappings; the limit is %d", len(cfg.GetPortMappings()), maxListLen)
	}
	for _, pm := range cfg.GetPortMappings() {
		if err := validatePortMapping(pm); err != nil {
			return err
		}
	}
	linux := cfg.GetLinux()
	if p := linux.GetCgroupParent(); p != "" && (strings.Contains(p, "..") || strings.ContainsRune(p, 0) || len(p) > maxPathLen) {
		return fmt.Errorf("cgroup parent %.80q must not contain \"..\" or NUL", p)
	}
	for k, v := range linux.GetSysctls() {
		if err := validateSysctl(k, v); err != nil {
			return err
		}
	}
	sec := linux.GetSecurityContext()
	if err := validateIDs(sec.GetRunAsUser(), sec.GetRunAsGroup(), sec.GetSupplementalGroups()); err != nil {
		return err
	}
	if err := validateNamespaceOptions(sec.GetNamespaceOptions()); err != nil {
		return err
	}
	if err := firstErr(validateProfile("pod seccomp", sec.GetSeccomp()), validateProfile("pod AppArmor", sec.GetApparmor())); err != nil {
		return err
	}
	if err := validateResources(linux.GetResources()); err != nil {
		return fmt.Errorf("pod resources: %w", err)
	}
	if err := validateResources(linux.GetOverhead()); err != nil {
		return fmt.Errorf("pod overhead: %w", err)
	}
	return nil
}

func validateContainerConfig(cfg *runtimeapi.ContainerConfig) error {
	if cfg == nil {
		return fmt.Errorf("container config is missing")
	}
	if cfg.GetMetadata() == nil {
		return fmt.Errorf("container config has no metadata; it needs a name")
	}
	if err := validateName("container name", cfg.GetMetadata().GetName()); err != nil {
		return err
	}
	if cfg.GetImage() == nil || cfg.GetImage().GetImage() == "" {
		return fmt.Errorf("container %q names no image", cfg.GetMetadata().GetName())
	}
	if ref := cfg.GetImage().GetImage(); strings.HasPrefix(ref, "/") {
		// A checkpoint archive to restore from, as CRI-O takes one.
		if err := validateAbsPath("checkpoint archive", ref); err != nil {
			return err
		}
	} else if err := validateImageSpec(cfg.GetImage()); err != nil {
		return err
	}
	if err := firstErr(validateMap("container label", cfg.GetLabels()), validateMap("container annotation", cfg.GetAnnotations())); err != nil {
		return err
	}
	if err := validateExecve(cfg); err != nil {
		return err
	}
	if wd := cfg.GetWorkingDir(); wd != "" {
		if err := validateAbsPath("working directory", wd); err != nil {
			return err
		}
	}
	if lp := cfg.GetLogPath(); lp != "" {
		if err := validateRelPath("log path", lp); err != nil {
			return err
		}
	}
	if len(cfg.GetMounts()) > maxListLen || len(cfg.GetDevices()) > maxListLen {
		return fmt.Errorf("%d mounts and %d devices; the limit is %d each", len(cfg.GetMounts()), len(cfg.GetDevices()), maxListLen)
	}
	for _, m := range cfg.GetMounts() {
		if err := validateMount(m); err != nil {
			return err
		}
	}
	for _, d := range cfg.GetDevices() {
		if err := validateDevice(d); err != nil {
			return err
		}
	}
	if err := validateResources(cfg.GetLinux().GetResources()); err != nil {
		return err
	}
	return validateSecurityContext(cfg.GetLinux().GetSecurityContext())
}

// validateExecve bounds what reaches execve: command, args and environment.
func validateExecve(cfg *runtimeapi.ContainerConfig) error {
	if err := firstErr(validateCommand("command", cfg.GetCommand(), false), validateCommand("args", cfg.GetArgs(), false)); err != nil {
		return err
	}
	total := 0
	for _, s := range cfg.GetCommand() {
		total += len(s) + 1
	}
	for _, s := range cfg.GetArgs() {
		total += len(s) + 1
	}
	for _, kv := range cfg.GetEnvs() {
		if kv == nil {
			return fmt.Errorf("environment has an empty entry")
		}
		k, v := kv.GetKey(), string(kv.GetValue())
		switch {
		case k == "":
			return fmt.Errorf("environment variable with an empty name")
		case strings.ContainsAny(k, "=\x00"):
			return fmt.Errorf("environment variable name %.80q contains '=' or NUL", k)
		case strings.ContainsRune(v, 0):
			return fmt.Errorf("environment variable %.80s: value contains NUL", k)
		case len(k)+len(v)+1 > maxArgBytes:
			return fmt.Errorf("environment variable %.80s is %d bytes; the kernel takes at most %d", k, len(k)+len(v)+1, maxArgBytes)
		}
		total += len(k) + len(v) + 2
	}
	if total > maxArgsTotal {
		return fmt.Errorf("command, args and environment are %d bytes together; the limit is %d", total, maxArgsTotal)
	}
	return nil
}

func validateCommand(what string, args []string, needOne bool) error {
	if needOne && len(args) == 0 {
		return fmt.Errorf("%s is empty", what)
	}
	total := 0
	for i, a := range args {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("%s[%d] contains NUL", what, i)
		}
		if len(a) > maxArgBytes {
			return fmt.Errorf("%s[%d] is %d bytes; the kernel takes at most %d", what, i, len(a), maxArgBytes)
		}
		total += len(a) + 1
	}
	if total > maxArgsTotal {
		return fmt.Errorf("%s is %d bytes; the limit is %d", what, total, maxArgsTotal)
	}
	return nil
}

func validateMap(what string, m map[string]string) error {
	total := 0
	for k, v := range m {
		if k == "" {
			return fmt.Errorf("%s with an empty key", what)
		}
		if len(k) > maxLabelKeyLen {
			return fmt.Errorf("%s key %.80q... is %d bytes; the limit is %d", what, k, len(k), maxLabelKeyLen)
		}
		if strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%s %.80q contains NUL", what, k)
		}
		total += len(k) + len(v)
	}
	if total > maxMapBytes {
		return fmt.Errorf("%ss are %d bytes together; the limit is %d", what, total, maxMapBytes)
	}
	return nil
}

// validateAbsPath accepts an absolute path with no ".." element and no NUL.
func validateAbsPath(what, p string) error {
	if !path.IsAbs(p) {
		return fmt.Errorf("%s %.200q must be an absolute path", what, p)
	}
	return validatePathChars(what, p)
}

// validateRelPath accepts a path that stays below the directory it is
// joined to: relative, with no ".." element.
func validateRelPath(what, p string) error {
	if path.IsAbs(p) {
		return fmt.Errorf("%s %.200q must be relative", what, p)
	}
	return validatePathChars(what, p)
}

func validatePathChars(what, p string) error {
	switch {
	case len(p) > maxPathLen:
		return fmt.Errorf("%s is %d bytes; the limit is %d (PATH_MAX)", what, len(p), maxPathLen)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%s %.200q contains NUL", what, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("%s %.200q has a \"..\" element", what, p)
		}
	}
	return nil
}

func validateDNS(dns *runtimeapi.DNSConfig) error {
	// Each entry becomes a line of resolv.conf: no whitespace may split it.
	for _, s := range dns.GetServers() {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("DNS server %.80q is not an IP address", s)
		}
	}
	if len(dns.GetSearches()) > maxDNSSearches {
		return fmt.Errorf("%d DNS search domains; the limit is %d", len(dns.GetSearches()), maxDNSSearches)
	}
	total := 0
	for _, s := range dns.GetSearches() {
		if s == "" || strings.ContainsFunc(s, isSpaceOrControl) {
			return fmt.Errorf("DNS search domain %.80q is empty or has whitespace", s)
		}
		total += len(s) + 1
	}
	if total > maxDNSSearchLen {
		return fmt.Errorf("DNS search domains are %d bytes together; the limit is %d", total, maxDNSSearchLen)
	}
	if len(dns.GetOptions()) > maxListLen {
		return fmt.Errorf("%d DNS options; the limit is %d", len(dns.GetOptions()), maxListLen)
	}
	for _, o := range dns.GetOptions() {
		if o == "" || len(o) > 256 || strings.ContainsFunc(o, isSpaceOrControl) {
			return fmt.Errorf("DNS option %.80q is empty, too long or has whitespace", o)
		}
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

func validatePortMapping(pm *runtimeapi.PortMapping) error {
	if pm == nil {
		return fmt.Errorf("port mapping is empty")
	}
	if pm.GetContainerPort() < 1 || pm.GetContainerPort() > 65535 {
		return fmt.Errorf("container port %d is outside 1-65535", pm.GetContainerPort())
	}
	if pm.GetHostPort() < 0 || pm.GetHostPort() > 65535 {
		return fmt.Errorf("host port %d is outside 0-65535 (0: no host port)", pm.GetHostPort())
	}
	if _, ok := runtimeapi.Protocol_name[int32(pm.GetProtocol())]; !ok {
		return fmt.Errorf("port mapping protocol %d is not TCP, UDP or SCTP", pm.GetProtocol())
	}
	if ip := pm.GetHostIp(); ip != "" && net.ParseIP(ip) == nil {
		return fmt.Errorf("port mapping host IP %.80q is not an IP address", ip)
	}
	return nil
}

// validateSysctl checks a sysctl's form: dotted (or slashed) plain
// components, so the name cannot climb out of /proc/sys. Whether it is
// namespaced is the sandbox's call (it knows the pod's namespaces).
func validateSysctl(k, v string) error {
	if k == "" || len(k) > 256 {
		return fmt.Errorf("sysctl name %.80q is empty or too long", k)
	}
	for _, c := range strings.FieldsFunc(k+".", func(r rune) bool { return r == '.' || r == '/' }) {
		if !sysctlComponent.MatchString(c) {
			return fmt.Errorf("sysctl name %.80q: %q is not a plain name component", k, c)
		}
	}
	if strings.Contains(k, "..") || strings.Contains(k, "//") || strings.HasPrefix(k, ".") || strings.HasPrefix(k, "/") ||
		strings.HasSuffix(k, ".") || strings.HasSuffix(k, "/") {
		return fmt.Errorf("sysctl name %.80q has an empty component", k)
	}
	if len(v) > maxSysctlValue || strings.ContainsRune(v, 0) {
		return fmt.Errorf("sysctl %s: value is longer than %d bytes or contains NUL", k, maxSysctlValue)
	}
	return nil
}

func validateIDs(user, group *runtimeapi.Int64Value, groups []int64) error {
	check := func(what string, v int64) error {
		if v < 0 || v > maxID {
			return fmt.Errorf("%s %d is outside 0-%d", what, v, int64(maxID))
		}
		return nil
	}
	if user != nil {
		if err := check("run_as_user", user.GetValue()); err != nil {
			return err
		}
	}
	if group != nil {
		if err := check("run_as_group", group.GetValue()); err != nil {
			return err
		}
	}
	if len(groups) > maxListLen {
		return fmt.Errorf("%d supplemental groups; the limit is %d", len(groups), maxListLen)
	}
	for _, g := range groups {
		if err := check("supplemental group", g); err != nil {
			return err
		}
	}
	return nil
}

func validateNamespaceOptions(ns *runtimeapi.NamespaceOption) error {
	for what, mode := range map[string]runtimeapi.NamespaceMode{"network": ns.GetNetwork(), "pid": ns.GetPid(), "ipc": ns.GetIpc()} {
		if _, ok := runtimeapi.NamespaceMode_name[int32(mode)]; !ok {
			return fmt.Errorf("%s namespace mode %d is not POD, CONTAINER, NODE or TARGET", what, mode)
		}
	}
	if t := ns.GetTargetId(); t != "" {
		return validateID("namespace target ID", t)
	}
	return nil
}

func validateProfile(what string, p *runtimeapi.SecurityProfile) error {
	if p == nil {
		return nil
	}
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_RuntimeDefault, runtimeapi.SecurityProfile_Unconfined:
		return nil
	case runtimeapi.SecurityProfile_Localhost:
		ref := p.GetLocalhostRef()
		if ref == "" {
			return fmt.Errorf("%s profile is Localhost but names no profile", what)
		}
		if len(ref) > maxPathLen || strings.ContainsRune(ref, 0) || hasControl(ref) {
			return fmt.Errorf("%s profile name %.80q is too long or has control characters", what, ref)
		}
		return nil
	}
	return fmt.Errorf("%s profile type %d is not RuntimeDefault, Unconfined or Localhost", what, p.GetProfileType())
}

func validateSecurityContext(sec *runtimeapi.LinuxContainerSecurityContext) error {
	if sec == nil {
		return nil
	}
	if err := validateIDs(sec.GetRunAsUser(), sec.GetRunAsGroup(), sec.GetSupplementalGroups()); err != nil {
		return err
	}
	if u := sec.GetRunAsUsername(); u != "" && (len(u) > 256 || strings.ContainsAny(u, ":/") || hasControl(u)) {
		return fmt.Errorf("run_as_username %.80q: at most 256 characters, no ':', '/' or control characters", u)
	}
	if _, ok := runtimeapi.SupplementalGroupsPolicy_name[int32(sec.GetSupplementalGroupsPolicy())]; !ok {
		return fmt.Errorf("supplemental groups policy %d is not Merge or Strict", sec.GetSupplementalGroupsPolicy())
	}
	caps := sec.GetCapabilities()
	for what, list := range map[string][]string{"add": caps.GetAddCapabilities(), "drop": caps.GetDropCapabilities(), "ambient": caps.GetAddAmbientCapabilities()} {
		if len(list) > maxListLen {
			return fmt.Errorf("%d capabilities to %s; the limit is %d", len(list), what, maxListLen)
		}
		for _, c := range list {
			if !knownCapability(c, what != "ambient") {
				return fmt.Errorf("capability %.80q (%s) is not a Linux capability", c, what)
			}
		}
	}
	for what, list := range map[string][]string{"masked path": sec.GetMaskedPaths(), "read-only path": sec.GetReadonlyPaths()} {
		if len(list) > maxListLen {
			return fmt.Errorf("%d %ss; the limit is %d", len(list), what, maxListLen)
		}
		for _, p := range list {
			if err := validateAbsPath(what, p); err != nil {
				return err
			}
		}
	}
	if err := validateNamespaceOptions(sec.GetNamespaceOptions()); err != nil {
		return err
	}
	return firstErr(validateProfile("seccomp", sec.GetSeccomp()), validateProfile("AppArmor", sec.GetApparmor()))
}

// knownCapability accepts "ALL" (when allowed) and the capabilities this
// kernel and libcapability know, with or without "CAP_", any case.
func knownCapability(c string, allowAll bool) bool {
	n := strings.ToUpper(c)
	if n == "ALL" {
		return allowAll
	}
	n = strings.TrimPrefix(n, "CAP_")
	if !capPattern.MatchString(n) {
		return false
	}
	for _, k := range capability.ListKnown() {
		if strings.ToUpper(k.String()) == n {
			return true
		}
	}
	return false
}

func validateMount(m *runtimeapi.Mount) error {
	if m == nil {
		return fmt.Errorf("mount is empty")
	}
	if err := validateAbsPath("mount container path", m.GetContainerPath()); err != nil {
		return err
	}
	if m.GetImage() == nil {
		if err := validateAbsPath("mount host path", m.GetHostPath()); err != nil {
			return err
		}
	}
	if _, ok := runtimeapi.MountPropagation_name[int32(m.GetPropagation())]; !ok {
		return fmt.Errorf("mount at %s: propagation %d is not private, rslave or rshared", m.GetContainerPath(), m.GetPropagation())
	}
	if sp := m.GetImageSubPath(); sp != "" {
		if err := validateRelPath("image sub-path", sp); err != nil {
			return err
		}
	}
	for _, o := range m.GetMountOptions() {
		if !MountOptions[o] {
			return fmt.Errorf("mount at %s: mount option %.40q is not one of %s (read-only and propagation have their own fields)",
				m.GetContainerPath(), o, strings.Join(slices.Sorted(maps.Keys(MountOptions)), ", "))
		}
	}
	return nil
}

// MountOptions are the Mount.mount_options (CRI 1.37) peapod applies: the
// per-mount flags a bind mount can take (runc remounts the bind with them).
// Others are refused rather than silently ignored; ro/rw and propagation
// have their own fields.
var MountOptions = map[string]bool{
	"nosuid": true, "nodev": true, "noexec": true,
	"noatime": true, "nodiratime": true, "relatime": true, "strictatime": true,
}

func validateDevice(d *runtimeapi.Device) error {
	if d == nil {
		return fmt.Errorf("device is empty")
	}
	if err := firstErr(validateAbsPath("device container path", d.GetContainerPath()), validateAbsPath("device host path", d.GetHostPath())); err != nil {
		return err
	}
	if p := d.GetPermissions(); p == "" || strings.Trim(p, "rwm") != "" || len(p) > 3 {
		return fmt.Errorf("device %s: permissions %q must be made of r, w and m", d.GetHostPath(), p)
	}
	return nil
}

func validateResources(r *runtimeapi.LinuxContainerResources) error {
	if r == nil {
		return nil
	}
	switch {
	case r.GetCpuPeriod() != 0 && (r.GetCpuPeriod() < minCPUPeriod || r.GetCpuPeriod() > maxCPUPeriod):
		return fmt.Errorf("cpu_period %d is outside %d-%d microseconds (0: default)", r.GetCpuPeriod(), minCPUPeriod, maxCPUPeriod)
	case r.GetCpuQuota() != 0 && r.GetCpuQuota() != -1 && r.GetCpuQuota() < minCPUQuota:
		return fmt.Errorf("cpu_quota %d must be -1 (no limit), 0 (default) or at least %d microseconds", r.GetCpuQuota(), minCPUQuota)
	case r.GetCpuShares() != 0 && (r.GetCpuShares() < 2 || r.GetCpuShares() > maxCPUShares):
		return fmt.Errorf("cpu_shares %d is outside 2-%d (0: default)", r.GetCpuShares(), maxCPUShares)
	case r.GetMemoryLimitInBytes() < 0:
		return fmt.Errorf("memory_limit_in_bytes %d is negative (0: no limit)", r.GetMemoryLimitInBytes())
	case r.GetMemorySwapLimitInBytes() < -1:
		return fmt.Errorf("memory_swap_limit_in_bytes %d must be -1 (unlimited), 0 (default) or positive", r.GetMemorySwapLimitInBytes())
	case r.GetOomScoreAdj() < -maxOOMScoreAdj || r.GetOomScoreAdj() > maxOOMScoreAdj:
		return fmt.Errorf("oom_score_adj %d is outside -1000..1000", r.GetOomScoreAdj())
	}
	for what, set := range map[string]string{"cpuset_cpus": r.GetCpusetCpus(), "cpuset_mems": r.GetCpusetMems()} {
		if err := validateCPUSet(what, set); err != nil {
			return err
		}
	}
	for _, h := range r.GetHugepageLimits() {
		if h == nil || !pageSizePattern.MatchString(h.GetPageSize()) {
			return fmt.Errorf("hugepage limit page size %.40q is not like 2MB or 1GB", h.GetPageSize())
		}
	}
	for k, v := range r.GetUnified() {
		if k == "" || len(k) > maxCgroupFileLen || strings.ContainsAny(k, "/\x00") || strings.HasPrefix(k, ".") {
			return fmt.Errorf("unified cgroup key %.80q is not a cgroup file name", k)
		}
		if len(v) > maxSysctlValue || strings.ContainsRune(v, 0) {
			return fmt.Errorf("unified cgroup %s: value is longer than %d bytes or contains NUL", k, maxSysctlValue)
		}
	}
	return nil
}

var cpuSetPattern = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

func validateCPUSet(what, s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 1024 || !cpuSetPattern.MatchString(s) {
		return fmt.Errorf("%s %.80q is not a list like 0-3,5", what, s)
	}
	return nil
}

// validateImageSpec accepts image IDs and references docker's grammar
// parses (short names are completed as kubelet's images are).
func validateImageSpec(spec *runtimeapi.ImageSpec) error {
	ref := spec.GetImage()
	switch {
	case ref == "":
		return fmt.Errorf("image is empty")
	case len(ref) > maxImageRefLen:
		return fmt.Errorf("image reference is %d bytes; the limit is %d", len(ref), maxImageRefLen)
	case imageIDPattern.MatchString(ref):
		return nil
	}
	if _, err := reference.ParseNormalizedNamed(ref); err != nil {
		return fmt.Errorf("image reference %.200q: %v", ref, err)
	}
	return validateMap("image annotation", spec.GetAnnotations())
}
