package cri

import (
	"context"
	"errors"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStatusReportsNetwork(t *testing.T) {
	for _, tc := range []struct {
		ready  func() error
		status bool
	}{
		{nil, true},
		{func() error { return nil }, true},
		{func() error { return errors.New("install the nftables package") }, false},
	} {
		s := &Service{info: Info{NetworkReady: tc.ready}}
		resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Status.Conditions {
			if c.Type == runtimeapi.NetworkReady {
				if c.Status != tc.status || (!c.Status && c.Message != "install the nftables package") {
					t.Errorf("NetworkReady = %v %q, want %v", c.Status, c.Message, tc.status)
				}
			}
		}
	}
}
