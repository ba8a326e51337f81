package oci

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultAppArmorProfile is the profile RuntimeDefault names, loaded on
// first use from defaultAppArmorPolicy.
const defaultAppArmorProfile = "peapod-default"

// AppArmor's kernel interfaces; variables so tests can point them at files.
// AppArmor is the host's AppArmor as the spec needs it.
type AppArmor interface {
	Enabled() bool
	// Loaded says whether the named profile is loaded in the kernel.
	Loaded(name string) (bool, error)
	// LoadDefault loads peapod's default profile unless it is loaded.
	LoadDefault() error
}

// hostAppArmor is the kernel's AppArmor, through its files and
// apparmor_parser.
type hostAppArmor struct {
	enabledFile, profilesFile, parser string
}

var systemAppArmor = hostAppArmor{
	enabledFile:  "/sys/module/apparmor/parameters/enabled",
	profilesFile: "/sys/kernel/security/apparmor/profiles",
	parser:       "apparmor_parser",
}

// apparmorProfile picks the container's AppArmor profile, as containerd
// does: none for privileged containers without one, none for Unconfined.
// On a kernel without AppArmor a RuntimeDefault (or absent) profile is
// skipped, but a Localhost profile is refused: the container would run
// without the confinement its author asked for.
func apparmorProfile(sec *runtimeapi.LinuxContainerSecurityContext, aa AppArmor) (string, error) {
	p := sec.GetApparmor()
	if p == nil && sec.GetApparmorProfile() != "" {
		var err error
		if p, err = deprecatedAppArmor(sec.GetApparmorProfile()); err != nil {
			return "", err
		}
	}
	if p != nil && p.GetProfileType() == runtimeapi.SecurityProfile_Unconfined {
		return "", nil
	}
	if aa == nil || !aa.Enabled() {
		if p.GetProfileType() == runtimeapi.SecurityProfile_Localhost {
			return "", fmt.Errorf("AppArmor profile %q: AppArmor is not enabled on this host: %w", p.GetLocalhostRef(), ErrInvalidArgument)
		}
		return "", nil
	}
	if p == nil && sec.GetPrivileged() {
		return "", nil
	}
	if p.GetProfileType() == runtimeapi.SecurityProfile_Localhost {
		name := strings.TrimPrefix(p.GetLocalhostRef(), "localhost/")
		loaded, err := aa.Loaded(name)
		if err != nil {
			return "", err
		}
		if !loaded {
			return "", fmt.Errorf("AppArmor profile %q is not loaded: %w", name, ErrInvalidArgument)
		}
		return name, nil
	}
	// RuntimeDefault, or no profile on an unprivileged container.
	if err := aa.LoadDefault(); err != nil {
		return "", err
	}
	return defaultAppArmorProfile, nil
}

func (h hostAppArmor) Enabled() bool {
	data, err := os.ReadFile(h.enabledFile)
	return err == nil && strings.HasPrefix(string(data), "Y")
}

// appArmorLoaded reports whether the kernel has a profile called name.
// Lines of the profiles file read "name (mode)".
func (h hostAppArmor) Loaded(name string) (bool, error) {
	f, err := os.Open(h.profilesFile)
	if err != nil {
		return false, fmt.Errorf("list AppArmor profiles: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if i := strings.LastIndex(line, " ("); i >= 0 {
			line = line[:i]
		}
		if line == name {
			return true, nil
		}
	}
	return false, s.Err()
}

var defaultAppArmorOnce struct {
	sync.Mutex
	done bool
}

// loadDefaultAppArmor loads peapod's default profile once per daemon.
func (h hostAppArmor) LoadDefault() error {
	defaultAppArmorOnce.Lock()
	defer defaultAppArmorOnce.Unlock()
	if defaultAppArmorOnce.done {
		return nil
	}
	if ok, err := h.Loaded(defaultAppArmorProfile); err == nil && ok {
		defaultAppArmorOnce.done = true
		return nil
	}
	cmd := exec.Command(h.parser, "-Kr")
	cmd.Stdin = bytes.NewReader([]byte(defaultAppArmorPolicy))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("load AppArmor profile %s with %s: %v: %s", defaultAppArmorProfile, h.parser, err, out)
	}
	defaultAppArmorOnce.done = true
	return nil
}

// defaultAppArmorPolicy follows the shape of the default profiles of
// docker and containerd: everything allowed except writes to the kernel's
// knobs, mounting, and reading the host's secrets through /proc and /sys.
const defaultAppArmorPolicy = `#include <tunables/global>
profile peapod-default flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>
  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (send,receive) peer=peapod-default,
  deny @{PROC}/* w,
  deny @{PROC}/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}/** w,
  deny @{PROC}/sys/[^k]** w,
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,
  deny mount,
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  ptrace (trace,read,tracedby,readby) peer=peapod-default,
}
`

// deprecatedAppArmor reads the deprecated apparmor_profile string
// ("runtime/default", "unconfined", "localhost/<name>"), which kubelets
// still send beside, and older ones instead of, the structured field, as
// containerd and CRI-O read it.
func deprecatedAppArmor(s string) (*runtimeapi.SecurityProfile, error) {
	switch {
	case s == "unconfined":
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, nil
	case s == "runtime/default":
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, nil
	case strings.HasPrefix(s, "localhost/"):
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: s}, nil
	}
	return nil, fmt.Errorf("AppArmor profile %q: want runtime/default, unconfined or localhost/<name>: %w", s, ErrInvalidArgument)
}
