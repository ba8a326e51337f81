package image

import "testing"

func TestNormalize(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{in: "busybox", want: "docker.io/library/busybox:latest"},
		{in: "busybox:1.36", want: "docker.io/library/busybox:1.36"},
		{in: "library/busybox", want: "docker.io/library/busybox:latest"},
		{in: "docker.io/busybox", want: "docker.io/library/busybox:latest"},
		{in: "index.docker.io/library/busybox:1", want: "docker.io/library/busybox:1"},
		{in: "foo/bar", want: "docker.io/foo/bar:latest"},
		{in: "registry.k8s.io/pause:3.9", want: "registry.k8s.io/pause:3.9"},
		{in: "registry.k8s.io/e2e-test-images/busybox", want: "registry.k8s.io/e2e-test-images/busybox:latest"},
		{in: "localhost/x", want: "localhost/x:latest"},
		{in: "127.0.0.1:5000/a/b:c", want: "127.0.0.1:5000/a/b:c"},
		{in: "busybox@" + d, want: "docker.io/library/busybox@" + d},
		{in: "quay.io/x/y:tag@" + d, want: "quay.io/x/y@" + d},
		{in: "", err: true},
		{in: "UPPER/case", err: true},
		{in: "busybox:", err: true},
		{in: "busybox@sha256:short", err: true},
	} {
		got, err := Normalize(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("Normalize(%q) = %q, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestHelpers(t *testing.T) {
	for in, want := range map[string]bool{
		"busybox": true, "library/busybox": true, "foo/bar:1": true,
		"docker.io/busybox": false, "localhost/x": false, "127.0.0.1:5000/x": false, "host:5000/x": false,
	} {
		if got := isShortName(in); got != want {
			t.Errorf("isShortName(%q) = %v", in, got)
		}
	}
	for in, want := range map[string]string{
		"docker.io/library/busybox:latest": "docker.io/library/busybox",
		"127.0.0.1:5000/a/b:c":             "127.0.0.1:5000/a/b",
		"127.0.0.1:5000/a/b":               "127.0.0.1:5000/a/b",
		"quay.io/x/y@sha256:abc":           "quay.io/x/y",
	} {
		if got := repoOf(in); got != want {
			t.Errorf("repoOf(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{"abc123": true, "": false, "busybox": false, "ABC": false} {
		if got := hexID(in); got != want {
			t.Errorf("hexID(%q) = %v", in, got)
		}
	}
}
