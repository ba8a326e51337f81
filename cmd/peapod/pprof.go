package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// pprofEnv names the address (host:port; keep it on loopback) where the
// daemon serves Go's profiles under /debug/pprof/, for performance work:
//
//	PEAPOD_PPROF=127.0.0.1:6060 peapod ...
//	go tool pprof 'http://127.0.0.1:6060/debug/pprof/profile?seconds=30'
//
// Unset (the default), nothing listens. An environment variable, not a
// config key: it is a developer's switch, not something to run nodes with.
const pprofEnv = "PEAPOD_PPROF"

// startPprof serves the profiles when PEAPOD_PPROF is set; the listener
// lives as long as the daemon.
func startPprof(log *slog.Logger) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("pprof not served", "env", pprofEnv, "address", addr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving pprof", "address", l.Addr().String())
	go http.Serve(l, mux)
}
