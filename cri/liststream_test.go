package cri

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestSendChunksBoundsBytes: a stream's messages stay below streamMsgBytes
// whatever the items weigh (validation allows 512 KiB of labels and
// annotations an item), every item is sent once and in order, and small
// items share messages.
func TestSendChunksBoundsBytes(t *testing.T) {
	container := func(i, annotation int) *runtimeapi.Container {
		return &runtimeapi.Container{
			Id:          fmt.Sprintf("%064d", i),
			Metadata:    &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("c%d", i)},
			Annotations: map[string]string{"big": strings.Repeat("x", annotation)},
		}
	}
	for _, tc := range []struct {
		name       string
		n, size    int
		maxMsgs    int // at most this many messages
		minPerMsgs int // at least this many items a message, but the last
	}{
		{"heavy items", 100, 250 << 10, 100, 1},
		{"kubelet-sized items", 20000, 600, 20000*800/streamMsgBytes + 1, 1000},
		{"one item", 1, 10, 1, 1},
		{"none", 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var items []*runtimeapi.Container
			for i := range tc.n {
				items = append(items, container(i, tc.size))
			}
			var got []string
			msgs := 0
			err := sendChunks(items, func(c []*runtimeapi.Container) error {
				msgs++
				if len(c) == 0 {
					t.Errorf("message %d is empty", msgs)
				}
				if sz := proto.Size(&runtimeapi.StreamContainersResponse{Containers: c}); sz > streamMsgBytes {
					t.Errorf("message %d: %d bytes, over %d", msgs, sz, streamMsgBytes)
				}
				if len(got)+len(c) < tc.n && len(c) < tc.minPerMsgs {
					t.Errorf("message %d: %d items, want at least %d", msgs, len(c), tc.minPerMsgs)
				}
				for _, x := range c {
					got = append(got, x.Id)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.n {
				t.Fatalf("sent %d items, want %d", len(got), tc.n)
			}
			for i, id := range got {
				if id != items[i].Id {
					t.Fatalf("item %d is %s, want %s", i, id, items[i].Id)
				}
			}
			if msgs > tc.maxMsgs {
				t.Errorf("%d messages, want at most %d", msgs, tc.maxMsgs)
			}
		})
	}
}
