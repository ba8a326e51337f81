package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerLogLocation: the keeper gets the log path as resolved at
// create, relative to the pod's log directory, and never one outside it.
func TestContainerLogLocation(t *testing.T) {
	pod := &runtimeapi.PodSandboxConfig{LogDirectory: "/var/log/pods/p/"}
	for _, tc := range []struct {
		logPath, dir, rel string
		bad               bool
	}{
		{"/var/log/pods/p/c/0.log", "/var/log/pods/p", "c/0.log", false},
		{"/var/log/pods/p/tmp/canary", "/var/log/pods/p", "tmp/canary", false},
		{"", "", "", false},
		{"/var/log/pods/other/0.log", "", "", true},
		{"/var/log/pods/p", "", "", true},
	} {
		dir, rel, err := containerLogLocation(pod, tc.logPath)
		if (err != nil) != tc.bad || dir != tc.dir || rel != tc.rel {
			t.Errorf("%q: %q %q %v", tc.logPath, dir, rel, err)
		}
	}
}

func TestResolvConf(t *testing.T) {
	got, err := resolvConf(&runtimeapi.DNSConfig{Servers: []string{"1.1.1.1", "8.8.8.8"}, Searches: []string{"a.svc", "b"}, Options: []string{"ndots:5"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "search a.svc b\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:5\n"
	if string(got) != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
}

func TestValidatePodConfig(t *testing.T) {
	meta := &runtimeapi.PodSandboxMetadata{Name: "n", Namespace: "ns", Uid: "u"}
	hostNet := &runtimeapi.LinuxPodSandboxConfig{
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}},
		Sysctls:         map[string]string{"net.ipv4.ip_forward": "1"},
	}
	for _, tc := range []struct {
		name string
		cfg  *runtimeapi.PodSandboxConfig
		ok   bool
	}{
		{"good", &runtimeapi.PodSandboxConfig{Metadata: meta}, true},
		{"nil", nil, false},
		{"no uid", &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "n", Namespace: "ns"}}, false},
		{"long hostname", &runtimeapi.PodSandboxConfig{Metadata: meta, Hostname: strings.Repeat("x", 65)}, false},
		{"net sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: hostNet}, false},
		{"not namespaced sysctl", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"vm.swappiness": "1"}}}, false},
		{"ipc sysctl", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"kernel.shmmax": "1"}}}, true},
		{"uts sysctl", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{Sysctls: map[string]string{"kernel.domainname": "d"}}}, true},
		{"hostname sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: hostNet.SecurityContext, Sysctls: map[string]string{"kernel.hostname": "pwned"}}}, false},
		{"domainname sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: hostNet.SecurityContext, Sysctls: map[string]string{"kernel.domainname": "pwned"}}}, false},
		{"slashed uts sysctl on host network", &runtimeapi.PodSandboxConfig{Metadata: meta, Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: hostNet.SecurityContext, Sysctls: map[string]string{"kernel/hostname": "pwned"}}}, false},
	} {
		err := validatePodConfig(tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v is not ErrInvalidArgument", tc.name, err)
		}
	}
}

// TestContainerLogPath: the log path stays in the log directory whatever
// symlinks the directory holds.
func TestContainerLogPath(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("/etc/shadow", filepath.Join(dir, "shadow.log"))
	os.Symlink("/etc", filepath.Join(dir, "etcdir"))
	os.Symlink("../../../../..", filepath.Join(dir, "up"))
	for rel, want := range map[string]string{
		"c/0.log":         dir + "/c/0.log",
		"shadow.log":      dir + "/etc/shadow",
		"etcdir/passwd":   dir + "/etc/passwd",
		"up/etc/shadow":   dir + "/etc/shadow",
		"./a//b/../x.log": "", // ".." refused
		"/etc/shadow":     "", // absolute refused
		"../x.log":        "",
	} {
		got, err := containerLogPath(dir, rel)
		if want == "" {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%q: %q, %v; want InvalidArgument", rel, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", rel, got, err, want)
		}
	}
}
