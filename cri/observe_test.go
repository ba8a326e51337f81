package cri

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/metrics"
	"github.com/peapod-cri/peapod/sandbox"
)

// counter reads peapod_cri_requests_total{method,code} from m.
func counter(t *testing.T, m *metrics.Metrics, method, code string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "peapod_cri_requests_total" {
			continue
		}
		for _, s := range f.Metric {
			l := map[string]string{}
			for _, p := range s.Label {
				l[p.GetName()] = p.GetValue()
			}
			if l["method"] == method && l["code"] == code {
				return s.Counter.GetValue()
			}
		}
	}
	return 0
}

func TestObserveUnary(t *testing.T) {
	var buf bytes.Buffer
	m := metrics.New(nil)
	s := &Service{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), metrics: m}
	call := func(method string, req any, handler grpc.UnaryHandler) error {
		_, err := s.observeUnary(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + method}, handler)
		return err
	}

	// A domain error becomes its gRPC code, counted and logged with its chain.
	notFound := func(context.Context, any) (any, error) {
		return nil, fmt.Errorf("container %q: %w", "abc", sandbox.ErrNotFound)
	}
	err := call("ContainerStatus", &runtimeapi.ContainerStatusRequest{ContainerId: "abc"}, notFound)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("code %v, want NotFound", status.Code(err))
	}
	// A mutation that succeeds: one info line naming the image.
	ok := func(context.Context, any) (any, error) {
		return &runtimeapi.PullImageResponse{ImageRef: "sha256:1"}, nil
	}
	if err := call("PullImage", &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}, ok); err != nil {
		t.Fatal(err)
	}
	// A read that succeeds: nothing at info.
	if err := call("ListImages", &runtimeapi.ListImagesRequest{}, func(context.Context, any) (any, error) {
		return &runtimeapi.ListImagesResponse{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	// A server fault is logged at error.
	_ = call("RemoveImage", &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "x"}}, func(context.Context, any) (any, error) {
		return nil, fmt.Errorf("remove layer: %w", fmt.Errorf("disk on fire"))
	})

	if got := counter(t, m, "ContainerStatus", "NotFound"); got != 1 {
		t.Errorf("ContainerStatus NotFound = %v, want 1", got)
	}
	if got := counter(t, m, "PullImage", "OK"); got != 1 {
		t.Errorf("PullImage OK = %v, want 1", got)
	}
	if got := counter(t, m, "ListImages", "OK"); got != 1 {
		t.Errorf("ListImages OK = %v, want 1", got)
	}

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if rec["request_id"] == nil || len(rec["request_id"].(string)) != 12 {
			t.Errorf("no request_id in %v", rec)
		}
		lines = append(lines, rec)
	}
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3 (failure, mutation, fault):\n%s", len(lines), buf.String())
	}
	if l := lines[0]; l["msg"] != "rpc failed" || l["code"] != "NotFound" || l["level"] != "INFO" ||
		!strings.Contains(l["err"].(string), `container "abc": `+sandbox.ErrNotFound.Error()) {
		t.Errorf("failure line: %v", l)
	}
	if l := lines[1]; l["msg"] != "PullImage" || l["image"] != "busybox" || l["image_id"] != "sha256:1" {
		t.Errorf("mutation line: %v", l)
	}
	if l := lines[2]; l["level"] != "ERROR" || l["code"] != "Unknown" || l["err"] != "remove layer: disk on fire" || l["image"] != "x" {
		t.Errorf("fault line: %v", l)
	}
}

func TestMethodName(t *testing.T) {
	if got := methodName("/runtime.v1.RuntimeService/RunPodSandbox"); got != "RunPodSandbox" {
		t.Fatal(got)
	}
}
