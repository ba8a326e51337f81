package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// cdiDevicePlugin is a kubelet device plugin (the v1beta1 API of
// k8s.io/kubelet/pkg/apis/deviceplugin) offering one device of resource
// whose allocation is the CDI device cdiName: the kubelet's own path from
// a pod's resource limit to ContainerConfig.CDI_devices
// (DevicePluginCDIDevices, GA since 1.31), as GPU plugins use it. Its few
// messages are encoded here with protowire, field numbers from the API's
// api.proto, so that the test needs no k8s.io/kubelet module (whose
// component-base would move the daemon's prometheus libraries).
type cdiDevicePlugin struct {
	resource, cdiName string
}

// rawCodec passes protobuf bytes through: the messages are built by hand.
type rawCodec struct{}

type rawMsg struct{ b []byte }

func (rawCodec) Marshal(v any) ([]byte, error) { return v.(*rawMsg).b, nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	v.(*rawMsg).b = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func appendString(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, field protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// serveDevicePlugin serves p in the kubelet's device-plugin directory and
// registers it with the kubelet there; cleanup stops it and removes its
// socket.
func serveDevicePlugin(t *testing.T, p *cdiDevicePlugin) {
	t.Helper()
	// The kubelet makes its registration socket when its device manager
	// starts, after its API is up, and empties the directory first: the
	// plugin's socket comes after.
	kubeletSock := filepath.Join(devicePluginDir, "kubelet.sock")
	waitFor(t, 60*time.Second, "the kubelet's "+kubeletSock, func() bool { _, err := os.Stat(kubeletSock); return err == nil })
	endpoint := "peapod-e2e-" + randomSuffix() + ".sock"
	sock := filepath.Join(devicePluginDir, endpoint)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("device plugin socket: %v", err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	unary := func(handle func(req []byte) []byte) grpc.MethodHandler {
		return func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req rawMsg
			if err := dec(&req); err != nil {
				return nil, err
			}
			return &rawMsg{handle(req.b)}, nil
		}
	}
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "v1beta1.DevicePlugin",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			// No PreStartContainer, no GetPreferredAllocation: empty options.
			{MethodName: "GetDevicePluginOptions", Handler: unary(func([]byte) []byte { return nil })},
			{MethodName: "Allocate", Handler: unary(p.allocate)},
		},
		Streams: []grpc.StreamDesc{{StreamName: "ListAndWatch", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			var dev []byte
			dev = appendString(dev, 1, "dev0")    // Device.ID
			dev = appendString(dev, 2, "Healthy") // Device.health
			if err := s.SendMsg(&rawMsg{appendMessage(nil, 1, dev)}); err != nil {
				return err
			}
			<-s.Context().Done()
			return nil
		}}},
	}, struct{}{})
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Stop()
		os.Remove(sock)
	})

	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req []byte
	req = appendString(req, 1, "v1beta1")  // RegisterRequest.version
	req = appendString(req, 2, endpoint)   // .endpoint, relative to the directory
	req = appendString(req, 3, p.resource) // .resource_name
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second*timeoutScale)
	defer cancel()
	if err := conn.Invoke(c, "/v1beta1.Registration/Register", &rawMsg{req}, &rawMsg{}, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatalf("register device plugin %s with the kubelet: %v", p.resource, err)
	}
}

// allocate answers an AllocateRequest with one ContainerAllocateResponse
// per container request, each naming the CDI device.
func (p *cdiDevicePlugin) allocate(req []byte) []byte {
	containers := 0
	for len(req) > 0 {
		num, typ, n := protowire.ConsumeTag(req)
		if n < 0 {
			break
		}
		req = req[n:]
		if num == 1 { // AllocateRequest.container_requests
			containers++
		}
		if n = protowire.ConsumeFieldValue(num, typ, req); n < 0 {
			break
		}
		req = req[n:]
	}
	cdi := appendString(nil, 1, p.cdiName) // CDIDevice.name
	resp := appendMessage(nil, 5, cdi)     // ContainerAllocateResponse.cdi_devices
	var out []byte
	for range containers {
		out = appendMessage(out, 1, resp) // AllocateResponse.container_responses
	}
	return out
}
