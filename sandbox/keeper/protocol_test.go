package keeper

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeKeeper answers one request on a unix socket with reply and hands the
// request's fields to the test.
func fakeKeeper(t *testing.T, reply string) (Client, <-chan []string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "k")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan []string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var req []byte
		buf := make([]byte, 4096)
		for !bytes.HasSuffix(req, []byte{0, 0}) {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			req = append(req, buf[:n]...)
		}
		got <- strings.Split(string(req[:len(req)-2]), "\x00")
		c.Write([]byte(reply))
	}()
	return Client{Socket: sock}, got
}

// A keeper started by an older peapod keeps running after an upgrade: its
// start request must stay the 7-field form it parses, with the log as one
// path, or every container (re)started in its pod would fail.
func TestKeeperStartShapedForProtocol(t *testing.T) {
	req := StartRequest{ID: "c1", ExitFile: "/state/c1/exit", LogDir: "/logs/pod", LogPath: "ctr/0.log", Argv: []string{"/runner", "container-start"}}
	for _, tc := range []struct {
		protocol int
		req      StartRequest
		want     []string
	}{
		{Protocol, req, []string{"start", "c1", "ctr/0.log", "0", "0", "0", "/state/c1/exit", "/logs/pod", "/runner", "container-start"}},
		{0, req, []string{"start", "c1", "/logs/pod/ctr/0.log", "0", "0", "0", "/state/c1/exit", "/runner", "container-start"}},
		{0, StartRequest{ID: "c1", ExitFile: "/e", Argv: []string{"/runner"}}, []string{"start", "c1", "", "0", "0", "0", "/e", "/runner"}},
	} {
		k, got := fakeKeeper(t, "ok 42\n")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		pid, err := k.Start(ctx, tc.protocol, tc.req)
		cancel()
		if err != nil || pid != 42 {
			t.Fatalf("protocol %d: start = %d, %v", tc.protocol, pid, err)
		}
		if fields := <-got; !reflect.DeepEqual(fields, tc.want) {
			t.Errorf("protocol %d: request\n got %q\nwant %q", tc.protocol, fields, tc.want)
		}
	}
}
