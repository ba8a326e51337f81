package cri

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The kubelet lists every container and pod each second (PLEG relist),
// and on a node whose container GC lags that is 20,000 exited containers
// (kubernetes#134750), 15 MB of protobuf whose encoding, maps and all, is
// most of the call's time. An item of ListContainers or ListPodSandbox
// changes only with its state (ID, metadata, image, labels, annotations
// and creation time are fixed at creation), so each item's encoding is
// kept, by ID, with the state it was made for, and a list is the
// concatenation of its items' encodings.
//
// The reply carries them as its message's unknown fields: the repeated
// field of every list reply here is field 1, and unknown fields are
// written out verbatim, so the bytes on the wire are those of the items
// set one by one. A caller in this process reading the reply's fields
// sees none; rawItems is how this package reads them.

// itemCache is the kept encodings of one kind of list item.
type itemCache struct {
	m sync.Map     // ID → *encodedItem
	n atomic.Int64 // entries in m
}

// encodedItem is one item as an element of a repeated field 1: tag,
// length, message.
type encodedItem struct {
	state int32
	raw   []byte
}

// get returns the encoding of the item id in state, making it with build
// when it is not kept or was made for another state.
func (c *itemCache) get(id string, state int32, build func() proto.Message) []byte {
	if v, ok := c.m.Load(id); ok {
		if e := v.(*encodedItem); e.state == state {
			return e.raw
		}
	}
	msg, err := proto.Marshal(build())
	if err != nil { // a message built here from valid fields always encodes
		panic(err)
	}
	raw := protowire.AppendTag(make([]byte, 0, len(msg)+8), 1, protowire.BytesType)
	raw = protowire.AppendBytes(raw, msg)
	if _, loaded := c.m.Swap(id, &encodedItem{state: state, raw: raw}); !loaded {
		c.n.Add(1)
	}
	return raw
}

// prune drops the items not in live, after a list of every item; it only
// walks the cache when it holds more than live (something was removed).
func (c *itemCache) prune(ids []string) {
	if c.n.Load() <= int64(len(ids)) {
		return
	}
	live := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		live[id] = struct{}{}
	}
	c.m.Range(func(k, _ any) bool {
		if _, ok := live[k.(string)]; !ok {
			c.m.Delete(k)
			c.n.Add(-1)
		}
		return true
	})
}

// rawList returns msg with items as its repeated field 1.
func rawList[M proto.Message](msg M, items [][]byte) M {
	size := 0
	for _, it := range items {
		size += len(it)
	}
	buf := make([]byte, 0, size)
	for _, it := range items {
		buf = append(buf, it...)
	}
	if len(buf) > 0 {
		msg.ProtoReflect().SetUnknown(protoreflect.RawFields(buf))
	}
	return msg
}
