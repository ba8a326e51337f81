package cri

import (
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/config"
)

// TestStreamURLs: the streaming server listens on loopback by default, and
// its URLs carry random tokens that work once: a used or altered token
// finds nothing.
func TestStreamURLs(t *testing.T) {
	host, _, err := net.SplitHostPort(config.Defaults().StreamAddress)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		t.Fatalf("default stream_address %q is not a loopback address", config.Defaults().StreamAddress)
	}
	s, err := NewStreamServer(config.Defaults().StreamAddress, "", "", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ip := net.ParseIP(strings.Split(s.Addr(), ":")[0]); ip == nil || !ip.IsLoopback() {
		t.Fatalf("streaming server listens on %s", s.Addr())
	}
	seen := map[string]bool{}
	var urls []string
	for range 100 {
		resp, err := s.server.GetExec(&runtimeapi.ExecRequest{ContainerId: strings.Repeat("c", 64), Cmd: []string{"sh"}, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		token := resp.Url[strings.LastIndex(resp.Url, "/")+1:]
		raw, err := base64.RawURLEncoding.DecodeString(token)
		// 48 bits from crypto/rand (cri-streaming's token cache, as in
		// containerd and CRI-O), valid for one minute, at most 1000 at once:
		// a guess succeeds with odds below 1 in 2^38.
		if err != nil || len(raw) < 6 {
			t.Fatalf("token %q: %d random bytes (%v), want at least 6", token, len(raw), err)
		}
		if seen[token] {
			t.Fatalf("token %q handed out twice", token)
		}
		seen[token] = true
		urls = append(urls, resp.Url)
	}
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	first := urls[0]
	swap := "A"
	if strings.HasSuffix(first, "A") {
		swap = "B"
	}
	altered := first[:len(first)-1] + swap
	if code := get(altered); code != http.StatusNotFound {
		t.Errorf("altered token: HTTP %d, want 404", code)
	}
	if code := get(first); code == http.StatusNotFound {
		t.Errorf("fresh token: HTTP 404")
	}
	if code := get(first); code != http.StatusNotFound {
		t.Errorf("used token: HTTP %d, want 404", code)
	}
}
