package validate

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzValidateRequest: the boundary check never panics on arbitrary
// create requests, and what it lets through holds no path that climbs out
// (mount destinations and sources, log path, sysctl names).
func FuzzValidateRequest(f *testing.F) {
	for _, m := range []proto.Message{
		&runtimeapi.CreateContainerRequest{PodSandboxId: testID, Config: goodContainer()},
		&runtimeapi.RunPodSandboxRequest{Config: goodPod()},
	} {
		data, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	climbs := func(p string) bool {
		for _, el := range strings.Split(p, "/") {
			if el == ".." {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctr := &runtimeapi.CreateContainerRequest{}
		if proto.Unmarshal(data, ctr) == nil && Request(ctr) == nil {
			cfg := ctr.GetConfig()
			for _, m := range cfg.GetMounts() {
				if !strings.HasPrefix(m.GetContainerPath(), "/") || climbs(m.GetContainerPath()) || climbs(m.GetHostPath()) {
					t.Fatalf("accepted mount %v", m)
				}
			}
			if lp := cfg.GetLogPath(); strings.HasPrefix(lp, "/") || climbs(lp) {
				t.Fatalf("accepted log path %q", lp)
			}
		}
		pod := &runtimeapi.RunPodSandboxRequest{}
		if proto.Unmarshal(data, pod) == nil && Request(pod) == nil {
			for k := range pod.GetConfig().GetLinux().GetSysctls() {
				if strings.Contains(k, "..") || strings.HasPrefix(k, "/") || strings.Contains(k, "//") {
					t.Fatalf("accepted sysctl %q", k)
				}
			}
			if climbs(pod.GetConfig().GetLogDirectory()) {
				t.Fatalf("accepted log directory %q", pod.GetConfig().GetLogDirectory())
			}
		}
	})
}
