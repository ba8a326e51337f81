package testenv

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// ProxyMode says what a Proxy does to blob downloads.
type ProxyMode int

const (
	// PassThrough forwards everything unchanged.
	PassThrough ProxyMode = iota
	// StallBlobs sends the first half of each blob body, then nothing more
	// until the client goes away (a registry that hangs mid-blob).
	StallBlobs
	// CorruptBlobs flips one byte in the middle of each blob body of
	// more than 4 KiB (layers, not image configs).
	CorruptBlobs
	// SlowBlobs sends each blob body in 8 pieces, SlowGap apart: slow, but
	// never silent for longer than SlowGap.
	SlowBlobs
)

// SlowGap is the pause between the pieces of a SlowBlobs body.
const SlowGap = 150 * time.Millisecond

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)

// Proxy is a loopback HTTP proxy in front of a registry. It counts blob
// downloads and can stall or corrupt them.
type Proxy struct {
	Addr string // "127.0.0.1:PORT", to use as a registry address

	target string
	closed chan struct{}

	mu          sync.Mutex
	mode        ProxyMode
	only        string         // when set, mode applies only to this blob digest
	blobGets    map[string]int // by path
	inFlight    int
	maxInFlight int
}

// StartProxy starts a Proxy in front of the registry at target; it is
// closed in t.Cleanup (stalled downloads are released first).
func StartProxy(t testing.TB, target string) *Proxy {
	p := &Proxy{target: target, closed: make(chan struct{}), blobGets: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	p.Addr = srv.Listener.Addr().String()
	t.Cleanup(func() {
		close(p.closed)
		srv.CloseClientConnections()
		srv.Close()
	})
	return p
}

// SetMode changes what the proxy does to blob downloads from now on.
func (p *Proxy) SetMode(m ProxyMode) { p.SetModeFor(m, "") }

// SetModeFor is SetMode for the blob with this digest only; the others
// pass through.
func (p *Proxy) SetModeFor(m ProxyMode, digest string) {
	p.mu.Lock()
	p.mode, p.only = m, digest
	p.mu.Unlock()
}

// BlobGets is the number of blob downloads (GET) started through the proxy.
func (p *Proxy) BlobGets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.blobGets {
		n += c
	}
	return n
}

// MaxParallelBlobs is the most blob downloads that were open at once.
func (p *Proxy) MaxParallelBlobs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxInFlight
}

// Reset zeroes the counters.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.blobGets, p.maxInFlight = map[string]int{}, 0
	p.mu.Unlock()
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	isBlob := r.Method == http.MethodGet && blobPath.MatchString(r.URL.Path)
	p.mu.Lock()
	mode := p.mode
	if p.only != "" && !strings.HasSuffix(r.URL.Path, "/"+p.only) {
		mode = PassThrough
	}
	if isBlob {
		p.blobGets[r.URL.Path]++
		p.inFlight++
		p.maxInFlight = max(p.maxInFlight, p.inFlight)
	}
	p.mu.Unlock()
	if isBlob {
		defer func() { p.mu.Lock(); p.inFlight--; p.mu.Unlock() }()
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = "http", p.target, p.target
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if !isBlob || resp.StatusCode != http.StatusOK || mode == PassThrough {
		io.Copy(w, resp.Body)
		return
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return
	}
	half := len(body) / 2
	switch mode {
	case CorruptBlobs:
		if len(body) > 4<<10 {
			body[half] ^= 0xff
		}
		w.Write(body)
	case SlowBlobs:
		for i := 0; i < 8; i++ {
			w.Write(body[len(body)*i/8 : len(body)*(i+1)/8])
			w.(http.Flusher).Flush()
			select {
			case <-time.After(SlowGap):
			case <-r.Context().Done():
				return
			case <-p.closed:
				return
			}
		}
	case StallBlobs:
		w.Write(body[:half])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-p.closed:
		}
	}
}
