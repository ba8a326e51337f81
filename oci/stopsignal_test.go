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
		{img: "SIGRTMIN+3", want: "SIGRTMIN+3"},
		{img: "RTMAX-1", want: "SIGRTMAX-1"},
		{img: "SIGRTMIN+40", bad: true},
		{img: "SIGRTMAX+1", bad: true},
		{img: "65", bad: true},
		{img: "0", bad: true},
		{img: "NOPE", bad: true},
		{cfg: runtimeapi.Signal_SIGNAL_SIGINT, img: "SIGQUIT", want: "SIGINT"},
		{cfg: runtimeapi.Signal_SIGNAL_SIGIOT, want: "SIGABRT"},
		{cfg: runtimeapi.Signal_SIGNAL_SIGRTMINPLUS1, want: "SIGRTMIN+1"},
		{cfg: runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS1, want: "SIGRTMAX-1"},
		{cfg: runtimeapi.Signal(99), bad: true},
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
		if _, err := ParseSignal(got); err != nil {
			t.Errorf("%v/%q = %q: not read back: %v", c.cfg, c.img, got, err)
		}
	}
}

// TestStopSignalEnum: every value of the CRI enum (renamed SIGNAL_* in
// cri-api 0.37) names a distinct real signal, read back at stop as the same
// number, and ContainerStatus reports the value it came from — but for the
// three aliases, which report their canonical signal.
func TestStopSignalEnum(t *testing.T) {
	aliasOf := map[runtimeapi.Signal]runtimeapi.Signal{
		runtimeapi.Signal_SIGNAL_SIGCLD:  runtimeapi.Signal_SIGNAL_SIGCHLD,
		runtimeapi.Signal_SIGNAL_SIGPOLL: runtimeapi.Signal_SIGNAL_SIGIO,
		runtimeapi.Signal_SIGNAL_SIGIOT:  runtimeapi.Signal_SIGNAL_SIGABRT,
	}
	seen := map[unix.Signal]runtimeapi.Signal{}
	for v := range runtimeapi.Signal_name {
		enum := runtimeapi.Signal(v)
		if enum == runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
			continue
		}
		name, err := StopSignalName(&runtimeapi.ContainerConfig{StopSignal: enum}, Image{})
		if err != nil {
			t.Errorf("%v: %v", enum, err)
			continue
		}
		sig, err := ParseSignal(name)
		if err != nil || sig <= 0 || sig > 64 {
			t.Errorf("%v → %q → %d, %v", enum, name, sig, err)
			continue
		}
		want := enum
		if a, ok := aliasOf[enum]; ok {
			want = a
		} else {
			if prev, dup := seen[sig]; dup {
				t.Errorf("%v and %v both give signal %d", enum, prev, sig)
			}
			seen[sig] = enum
		}
		if got := SignalEnum(name); got != want {
			t.Errorf("%v → %q → status %v, want %v", enum, name, got, want)
		}
	}
	if len(seen) != 62 { // 1-64 but 32 and 33, which glibc keeps
		t.Errorf("%d distinct signals, want 62", len(seen))
	}
}
