package cri

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// rpcSurface is every RPC of cri-api v0.37's RuntimeService and
// ImageService and what peapod does with it. A cri-api upgrade that adds an
// RPC fails TestRPCSurface until the RPC is decided here.
var rpcSurface = map[string]bool{ // true: implemented by *Service
	"Version": true, "RunPodSandbox": true, "StopPodSandbox": true, "RemovePodSandbox": true,
	"PodSandboxStatus": true, "ListPodSandbox": true, "CreateContainer": true, "StartContainer": true,
	"StopContainer": true, "RemoveContainer": true, "ListContainers": true, "ContainerStatus": true,
	"UpdateContainerResources": true, "ReopenContainerLog": true, "ExecSync": true, "Exec": true,
	"Attach": true, "PortForward": true, "ContainerStats": true, "ListContainerStats": true,
	"PodSandboxStats": true, "ListPodSandboxStats": true, "UpdateRuntimeConfig": true, "Status": true,
	"GetContainerEvents": true, "ListMetricDescriptors": true, "ListPodSandboxMetrics": true,
	"RuntimeConfig": true, "UpdatePodSandboxResources": true,
	"StreamPodSandboxes": true, "StreamContainers": true, "StreamContainerStats": true,
	"StreamPodSandboxStats": true, "StreamPodSandboxMetrics": true, "StreamImages": true,
	"ListImages": true, "ImageStatus": true, "PullImage": true, "RemoveImage": true, "ImageFsInfo": true,
	// CheckpointContainer dumps with CRIU (cri/checkpoint.go); the pod-level
	// checkpoint/restore RPCs answer Unimplemented, naming the RPC.
	"CheckpointContainer": true, "CheckpointPod": false, "RestorePod": false,
}

// serviceMethods are the methods declared on *Service in this package's
// sources: what is implemented, as opposed to promoted from the embedded
// Unimplemented servers.
func serviceMethods(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 {
				continue
			}
			if star, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
				if id, ok := star.X.(*ast.Ident); ok && id.Name == "Service" {
					out[fd.Name.Name] = true
				}
			}
		}
	}
	return out
}

// TestRPCSurface: each RPC of both services is in rpcSurface; the ones
// marked implemented are, and the others answer Unimplemented with the
// RPC's name over a real gRPC connection (through the validation
// interceptor, as kubelet would reach them).
func TestRPCSurface(t *testing.T) {
	declared := serviceMethods(t)
	type rpc struct {
		service, name string
		stream        bool
	}
	var all []rpc
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, m := range sd.Methods {
			all = append(all, rpc{sd.ServiceName, m.MethodName, false})
		}
		for _, s := range sd.Streams {
			all = append(all, rpc{sd.ServiceName, s.StreamName, true})
		}
	}
	if len(all) != len(rpcSurface) {
		t.Errorf("cri-api has %d RPCs, rpcSurface decides %d", len(all), len(rpcSurface))
	}

	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := (&Service{log: slog.New(slog.DiscardHandler)}).NewGRPCServer()
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	for _, r := range all {
		t.Run(r.name, func(t *testing.T) {
			impl, known := rpcSurface[r.name]
			switch {
			case !known:
				t.Fatalf("%s.%s is new in cri-api: implement it or mark it unimplemented in rpcSurface", r.service, r.name)
			case impl != declared[r.name]:
				t.Fatalf("%s: rpcSurface says implemented=%v, *Service declares it: %v", r.name, impl, declared[r.name])
			case impl:
				return // its behaviour is tested where it is built
			}
			// The request and response types are the RPC's own: a
			// CheckpointPod with a pod ID, as a caller would send it.
			req, resp := messagesFor(t, r.name)
			err := conn.Invoke(context.Background(), "/"+r.service+"/"+r.name, req, resp)
			st, _ := status.FromError(err)
			if st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), r.name) {
				t.Errorf("%s: %v, want Unimplemented naming the RPC", r.name, err)
			}
		})
	}
}

func messagesFor(t *testing.T, name string) (req, resp proto.Message) {
	switch name {
	case "CheckpointContainer":
		return &runtimeapi.CheckpointContainerRequest{ContainerId: "c1", Location: "/tmp/x.tar"}, &runtimeapi.CheckpointContainerResponse{}
	case "CheckpointPod":
		return &runtimeapi.CheckpointPodRequest{PodSandboxId: "p1", OutputPath: "/tmp/x", ContainerIds: []string{"c1"}}, &runtimeapi.CheckpointPodResponse{}
	case "RestorePod":
		return &runtimeapi.RestorePodRequest{CheckpointPath: "/tmp/x"}, &runtimeapi.RestorePodResponse{}
	}
	t.Fatalf("no request for %s", name)
	return nil, nil
}
