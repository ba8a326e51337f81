package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// seccompProfile picks the container's seccomp filter: none for privileged
// containers (kubelet expects that) and for Unconfined or no profile,
// peapod's own default for RuntimeDefault, or a Localhost profile read
// from an absolute path on the node (OCI or docker JSON format).
func seccompProfile(sec *runtimeapi.LinuxContainerSecurityContext, caps []string) (*specs.LinuxSeccomp, error) {
	p := sec.GetSeccomp()
	if sec.GetPrivileged() || p == nil {
		return nil, nil
	}
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		return defaultSeccomp(caps), nil
	case runtimeapi.SecurityProfile_Localhost:
		return localhostSeccomp(p.GetLocalhostRef())
	}
	return nil, fmt.Errorf("seccomp profile type %v: %w", p.GetProfileType(), ErrInvalidArgument)
}

const maxSeccompProfile = 1 << 20

func localhostSeccomp(path string) (*specs.LinuxSeccomp, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("seccomp localhost profile %q must be an absolute path: %w", path, ErrInvalidArgument)
	}
	// A profile is a small regular file: a device such as /dev/zero or a
	// FIFO named by a request must not make the daemon read forever.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read seccomp profile: %v: %w", err, ErrInvalidArgument)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxSeccompProfile {
		return nil, fmt.Errorf("seccomp profile %s is not a regular file of at most %d bytes: %w", path, maxSeccompProfile, ErrInvalidArgument)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read seccomp profile: %v: %w", err, ErrInvalidArgument)
	}
	var prof specs.LinuxSeccomp
	if err := json.Unmarshal(data, &prof); err != nil {
		return nil, fmt.Errorf("seccomp profile %s is not valid JSON: %v: %w", path, err, ErrInvalidArgument)
	}
	if prof.DefaultAction == "" {
		return nil, fmt.Errorf("seccomp profile %s has no defaultAction: %w", path, ErrInvalidArgument)
	}
	return &prof, nil
}

// Syscalls the default profile refuses (EPERM) to every container: they
// reach kernel state that namespaces do not isolate (keyrings, kernel
// modules and images, the clock, swap, accounting) or are obsolete.
var alwaysDenied = []string{
	"acct", "add_key", "keyctl", "request_key", "kexec_load", "kexec_file_load",
	"swapon", "swapoff", "nfsservctl", "create_module", "get_kernel_syms",
	"query_module", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old",
	"lookup_dcookie", "quotactl", "quotactl_fd", "iopl", "ioperm",
}

// Syscalls the default profile allows only with the capability that
// governs them, as the container may have been given it on purpose.
var deniedWithout = map[string][]string{
	"CAP_SYS_ADMIN": {"mount", "umount", "umount2", "pivot_root", "unshare", "setns",
		"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
		"name_to_handle_at", "setdomainname", "sethostname", "bpf", "fanotify_init"},
	"CAP_SYS_MODULE":      {"init_module", "finit_module", "delete_module"},
	"CAP_SYS_BOOT":        {"reboot"},
	"CAP_SYS_TIME":        {"settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64", "adjtimex"},
	"CAP_SYS_PTRACE":      {"process_vm_readv", "process_vm_writev", "kcmp", "userfaultfd"},
	"CAP_SYS_NICE":        {"get_mempolicy", "mbind", "set_mempolicy", "move_pages"},
	"CAP_SYSLOG":          {"syslog"},
	"CAP_DAC_READ_SEARCH": {"open_by_handle_at"},
	"CAP_PERFMON":         {"perf_event_open"},
}

// defaultSeccomp is peapod's RuntimeDefault profile: everything is allowed
// except the syscalls above, which fail with EPERM. It is a deny list, not
// docker's allow list: new syscalls are allowed until judged.
func defaultSeccomp(caps []string) *specs.LinuxSeccomp {
	has := map[string]bool{}
	for _, c := range caps {
		has[c] = true
	}
	denied := append([]string(nil), alwaysDenied...)
	for cp, calls := range deniedWithout {
		if !has[cp] {
			denied = append(denied, calls...)
		}
	}
	eperm := uint(1)
	calls := []specs.LinuxSyscall{{Names: denied, Action: specs.ActErrno, ErrnoRet: &eperm}}
	if !has["CAP_SYS_ADMIN"] {
		calls = append(calls, namespaceClones(eperm)...)
	}
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls:      calls,
	}
}

// cloneNamespaceFlags are clone(2)'s CLONE_NEW* bits (CLONE_NEWNS,
// CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
// CLONE_NEWNET).
var cloneNamespaceFlags = []uint64{0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000}

// namespaceClones refuses what unshare and setns are refused for, through
// clone: a new namespace, above all a user namespace, which hands the
// container every capability over it and with them the kernel's
// namespaced attack surface (docker's and containerd's default profiles
// do the same). clone's flags are its first argument on every
// architecture listed; clone3 passes them in memory, which seccomp cannot
// read, so it fails with ENOSYS and the C library falls back to clone.
func namespaceClones(eperm uint) []specs.LinuxSyscall {
	var out []specs.LinuxSyscall
	for _, f := range cloneNamespaceFlags {
		out = append(out, specs.LinuxSyscall{Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}}})
	}
	enosys := uint(unix.ENOSYS)
	return append(out, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})
}
