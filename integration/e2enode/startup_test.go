package e2enode

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRegistrationDelay(t *testing.T) {
	// Shaped like the kubelet log of a run that hit the CSINode race
	// (kubelet started 21:53:42, node registered 21:54:02).
	log := `Flag --kubelet-cgroups has been deprecated
I1206 21:53:42.109873    9019 flags.go:64] FLAG: --register-node="true"
E1206 21:53:42.330500    9019 kubelet_node_status.go:396] "Error getting the current node from lister" err="node \"peapod-e2e-node\" not found"
I1206 21:54:02.396928    9019 kubelet_node_status.go:75] "Attempting to register node" node="peapod-e2e-node"
I1206 21:54:02.436381    9019 kubelet_node_status.go:78] "Successfully registered node" node="peapod-e2e-node"
I1206 21:54:12.436381    9019 kubelet_node_status.go:78] "Successfully registered node" node="peapod-e2e-node"
`
	p := filepath.Join(t.TempDir(), "kubelet.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := registrationDelay(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := 20*time.Second + 326508*time.Microsecond; d != want {
		t.Errorf("delay %v, want %v", d, want)
	}
	if d <= maxRegistrationDelay {
		t.Errorf("%v is within the bound %v: the race would go unnoticed", d, maxRegistrationDelay)
	}

	if err := os.WriteFile(p, []byte(log[:200]), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := registrationDelay(p); err == nil {
		t.Error("no registration line: want an error")
	}
}
