package oci

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStopSignalName(t *testing.T) {
	cases := []struct {
		cfg  runtimeapi.Signal
		img  string
		want string
		bad  bool
	}{
		{img: "", want: "SIGTERM"},
		{img: "SIGQUIT", want: "SIGQUIT"},
		{img: "quit", want: "SIGQUIT"},
		{img: "3", want: "SIGQUIT"},
		{img: "SIGRTMIN+3", bad: true},
		{img: "0", bad: true},
		{img: "NOPE", bad: true},
		{cfg: runtimeapi.Signal_SIGNAL_SIGINT, img: "SIGQUIT", want: "SIGINT"},
	}
	for _, c := range cases {
		got, err := StopSignalName(&runtimeapi.ContainerConfig{StopSignal: c.cfg}, Image{ID: "img", StopSignal: c.img})
		if c.bad {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("%v/%q: err = %v, want InvalidArgument", c.cfg, c.img, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%v/%q = %q, %v; want %q", c.cfg, c.img, got, err, c.want)
		}
		if unix.SignalNum(got) == 0 {
			t.Errorf("%v/%q = %q: not a signal name", c.cfg, c.img, got)
		}
	}
}
