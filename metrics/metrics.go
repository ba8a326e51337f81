// Package metrics is peapod's Prometheus instrumentation: the metric
// definitions, the hooks the other packages report to, and the HTTP
// endpoint that serves them. Metrics are always collected (it is cheap);
// the endpoint is served only when an address is configured.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peapod-cri/peapod/image"
)

const namespace = "peapod"

// Metrics holds peapod's metrics and the registry they are served from.
// All methods are safe for concurrent use, and on a nil *Metrics do
// nothing, so a component can be used without instrumentation.
type Metrics struct {
	reg *prometheus.Registry

	criRequests *prometheus.CounterVec
	criDuration *prometheus.HistogramVec

	pullBytes    prometheus.Counter
	pullDuration *prometheus.HistogramVec
	pullErrors   *prometheus.CounterVec

	oomKills     prometheus.Counter
	networkSetup *prometheus.HistogramVec

	streamSessions *prometheus.CounterVec
	streamActive   *prometheus.GaugeVec
}

// StateCounts reports, at scrape time, how many pods and containers are in
// each state (the runtime's own lists; nothing is cached here).
type StateCounts func() (pods, containers map[string]int)

// New creates the metrics and registers them, with the Go runtime and
// process collectors, in a registry of their own. counts may be nil.
func New(counts StateCounts) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		criRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cri_requests_total",
			Help: "CRI gRPC requests handled, by method and gRPC status code.",
		}, []string{"method", "code"}),
		criDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "cri_request_duration_seconds",
			Help: "Time to handle a CRI gRPC request (a stream: its whole life), by method and gRPC status code.",
			// 1 ms to ~2 min: ListContainers is sub-millisecond, PullImage minutes.
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, []string{"method", "code"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "image_pull_bytes_total",
			Help: "Bytes received from registries by image pulls (manifests, configs and layers).",
		}),
		pullDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "image_pull_duration_seconds",
			Help:    "Time to pull one image reference, by result (success or error).",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14), // 50 ms to ~7 min
		}, []string{"result"}),
		pullErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "image_pull_errors_total",
			Help: "Failed image pulls, by reason.",
		}, []string{"reason"}),
		oomKills: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "container_oom_kills_total",
			Help: "Containers that exited with OOMKilled.",
		}),
		networkSetup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "pod_network_setup_duration_seconds",
			Help:    "Time to set up a pod's network (built-in bridge or CNI), by result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms to ~8 s
		}, []string{"result"}),
		streamSessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "streaming_sessions_total",
			Help: "Exec, attach and port-forward sessions served by the streaming server.",
		}, []string{"kind"}),
		streamActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "streaming_sessions_active",
			Help: "Exec, attach and port-forward sessions open now.",
		}, []string{"kind"}),
	}
	m.reg.MustRegister(m.criRequests, m.criDuration, m.pullBytes, m.pullDuration, m.pullErrors,
		m.oomKills, m.networkSetup, m.streamSessions, m.streamActive,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if counts != nil {
		m.reg.MustRegister(stateCollector{counts: counts})
	}
	return m
}

// CountStates adds the pod and container counts, read from counts at
// each scrape. Call it once, when the runtime is open.
func (m *Metrics) CountStates(counts StateCounts) {
	m.reg.MustRegister(stateCollector{counts: counts})
}

// Registry is where the metrics are registered (for tests and for serving).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// CRIRequest records one CRI request.
func (m *Metrics) CRIRequest(method, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.criRequests.WithLabelValues(method, code).Inc()
	m.criDuration.WithLabelValues(method, code).Observe(d.Seconds())
}

// PullDone implements image.PullObserver: one pull of one reference.
func (m *Metrics) PullDone(bytes int64, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.pullBytes.Add(float64(bytes))
	result := "success"
	if err != nil {
		result = "error"
		m.pullErrors.WithLabelValues(pullErrorReason(err)).Inc()
	}
	m.pullDuration.WithLabelValues(result).Observe(d.Seconds())
}

// pullErrorReason is a small, fixed label set for pull failures.
func pullErrorReason(err error) string {
	switch {
	case errors.Is(err, image.ErrNotFound):
		return "not_found"
	case errors.Is(err, image.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, image.ErrRegistryUnavailable):
		return "registry_unavailable"
	case errors.Is(err, image.ErrPullStalled):
		return "stalled"
	case errors.Is(err, image.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, image.ErrNoSpace):
		return "no_space"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "other"
}

// OOMKill records a container that exited OOMKilled.
func (m *Metrics) OOMKill() {
	if m == nil {
		return
	}
	m.oomKills.Inc()
}

// NetworkSetup records one pod network setup.
func (m *Metrics) NetworkSetup(d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "success"
	if err != nil {
		result = "error"
	}
	m.networkSetup.WithLabelValues(result).Observe(d.Seconds())
}

// StreamSession records the start of a streaming session of kind "exec",
// "attach" or "portforward"; call the returned func when it ends.
func (m *Metrics) StreamSession(kind string) (done func()) {
	if m == nil {
		return func() {}
	}
	m.streamSessions.WithLabelValues(kind).Inc()
	g := m.streamActive.WithLabelValues(kind)
	g.Inc()
	return g.Dec
}

// stateCollector reads the pod and container counts at scrape time.
type stateCollector struct{ counts StateCounts }

var (
	podsDesc = prometheus.NewDesc(namespace+"_pods", "Pod sandboxes, by state (ready, notready).",
		[]string{"state"}, nil)
	containersDesc = prometheus.NewDesc(namespace+"_containers", "Containers, by state (created, running, exited).",
		[]string{"state"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- podsDesc; ch <- containersDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	pods, containers := c.counts()
	for state, n := range pods {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(n), state)
	}
	for state, n := range containers {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), state)
	}
}

// Server serves /metrics over plain HTTP.
type Server struct {
	lis  net.Listener
	http *http.Server
}

// Serve listens on addr and serves the metrics at /metrics until Close.
func (m *Metrics) Serve(addr string, log *slog.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	s := &Server{lis: lis, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is where the server listens.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server.
func (s *Server) Close() error { return s.http.Close() }
