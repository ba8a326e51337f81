package cri

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRawListWire: a reply made of kept item encodings decodes, on the
// client's side, to exactly the items, for each reply type that carries
// them (their repeated field is field 1).
func TestRawListWire(t *testing.T) {
	var cache itemCache
	var ctrs []*runtimeapi.Container
	var raw [][]byte
	for i := range 5 {
		c := &runtimeapi.Container{Id: fmt.Sprintf("c%d", i), PodSandboxId: "p", State: runtimeapi.ContainerState_CONTAINER_EXITED,
			Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("n%d", i), Attempt: 2},
			Labels:   map[string]string{"io.kubernetes.pod.name": "x"}, Annotations: map[string]string{"a": "b"}, CreatedAt: int64(i)}
		ctrs = append(ctrs, c)
		raw = append(raw, cache.get(c.Id, int32(c.State), func() proto.Message { return c }))
	}
	pod := &runtimeapi.PodSandbox{Id: "p", State: runtimeapi.PodSandboxState_SANDBOX_READY, RuntimeHandler: "h",
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "x", Namespace: "ns", Uid: "u"}}
	podRaw := [][]byte{cache.get(pod.Id, int32(pod.State), func() proto.Message { return pod })}

	roundTrip := func(name string, sent, got proto.Message) {
		t.Helper()
		b, err := proto.Marshal(sent)
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got.ProtoReflect().GetUnknown()) != 0 {
			t.Errorf("%s: the items did not decode as its field (unknown fields left)", name)
		}
	}
	var lc runtimeapi.ListContainersResponse
	roundTrip("ListContainersResponse", rawList(&runtimeapi.ListContainersResponse{}, raw), &lc)
	var sc runtimeapi.StreamContainersResponse
	roundTrip("StreamContainersResponse", rawList(&runtimeapi.StreamContainersResponse{}, raw), &sc)
	for name, got := range map[string][]*runtimeapi.Container{"ListContainersResponse": lc.Containers, "StreamContainersResponse": sc.Containers} {
		if len(got) != len(ctrs) {
			t.Fatalf("%s: %d containers, want %d", name, len(got), len(ctrs))
		}
		for i := range got {
			if !proto.Equal(got[i], ctrs[i]) {
				t.Errorf("%s: item %d = %v, want %v", name, i, got[i], ctrs[i])
			}
		}
	}
	var lp runtimeapi.ListPodSandboxResponse
	roundTrip("ListPodSandboxResponse", rawList(&runtimeapi.ListPodSandboxResponse{}, podRaw), &lp)
	var sp runtimeapi.StreamPodSandboxesResponse
	roundTrip("StreamPodSandboxesResponse", rawList(&runtimeapi.StreamPodSandboxesResponse{}, podRaw), &sp)
	if len(lp.Items) != 1 || !proto.Equal(lp.Items[0], pod) || len(sp.PodSandboxes) != 1 || !proto.Equal(sp.PodSandboxes[0], pod) {
		t.Errorf("pod lists: %v, %v; want [%v]", lp.Items, sp.PodSandboxes, pod)
	}
	var empty runtimeapi.ListContainersResponse
	roundTrip("empty", rawList(&runtimeapi.ListContainersResponse{}, nil), &empty)
	if len(empty.Containers) != 0 {
		t.Errorf("an empty list decodes to %d items", len(empty.Containers))
	}
}

// TestItemCacheFollowsState: an item is encoded once while its state
// holds, again when it changes, and forgotten after a full list without it.
func TestItemCacheFollowsState(t *testing.T) {
	var cache itemCache
	builds := 0
	build := func(state runtimeapi.ContainerState) func() proto.Message {
		return func() proto.Message {
			builds++
			return &runtimeapi.Container{Id: "c", State: state}
		}
	}
	decode := func(raw []byte) runtimeapi.ContainerState {
		var r runtimeapi.ListContainersResponse
		b, _ := proto.Marshal(rawList(&runtimeapi.ListContainersResponse{}, [][]byte{raw}))
		if err := proto.Unmarshal(b, &r); err != nil || len(r.Containers) != 1 {
			t.Fatalf("decode: %v, %v", err, r.Containers)
		}
		return r.Containers[0].State
	}
	running := runtimeapi.ContainerState_CONTAINER_RUNNING
	exited := runtimeapi.ContainerState_CONTAINER_EXITED
	for range 3 {
		if got := decode(cache.get("c", int32(running), build(running))); got != running {
			t.Fatalf("state %v, want %v", got, running)
		}
	}
	if builds != 1 {
		t.Errorf("encoded %d times in one state, want once", builds)
	}
	if got := decode(cache.get("c", int32(exited), build(exited))); got != exited {
		t.Errorf("after the exit the list says %v", got)
	}
	if builds != 2 {
		t.Errorf("encoded %d times over two states, want 2", builds)
	}
	cache.get("d", 1, build(running))
	cache.prune([]string{"d"})
	if _, ok := cache.m.Load("c"); ok || cache.n.Load() != 1 {
		t.Errorf("a removed item is kept (entries %d)", cache.n.Load())
	}
	cache.prune([]string{"d"})
	if _, ok := cache.m.Load("d"); !ok {
		t.Errorf("a listed item was dropped")
	}
}
