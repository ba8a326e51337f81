package main

import (
	"errors"
	"log/slog"

	"github.com/peapod-cri/peapod/config"
	"github.com/peapod-cri/peapod/nri"
	"github.com/peapod-cri/peapod/sandbox"
)

// nriPlugins is the daemon's NRI server, or nothing with enable_nri off.
type nriPlugins struct{ s *nri.Server }

func openNRI(cfg config.Config, log *slog.Logger) (nriPlugins, error) {
	if !cfg.EnableNRI {
		return nriPlugins{}, nil
	}
	s, err := nri.New(nri.Options{
		Socket:              cfg.NRISocket,
		RegistrationTimeout: cfg.NRIPluginRegistrationTimeout,
		RequestTimeout:      cfg.NRIPluginRequestTimeout,
		RuntimeName:         "peapod",
		RuntimeVersion:      version,
		Logger:              log,
	})
	if err != nil {
		return nriPlugins{}, err
	}
	return nriPlugins{s}, nil
}

// sandboxPlugins is nil (not a nil *nri.Server) when NRI is off.
func (n nriPlugins) sandboxPlugins() sandbox.Plugins {
	if n.s == nil {
		return nil
	}
	return n.s
}

// start serves the socket. A socket another runtime serves is left to it:
// the node runs on without NRI, loudly, rather than take plugins from
// containerd or fail to start.
func (n nriPlugins) start(rt *sandbox.Runtime, log *slog.Logger) {
	if n.s == nil {
		return
	}
	if err := n.s.Start(rt); err != nil {
		if errors.Is(err, nri.ErrSocketInUse) {
			log.Error("NRI is off: set nri_socket to a free path, or stop the other runtime's NRI", "err", err)
		} else {
			log.Error("NRI is off", "err", err)
		}
	}
}

func (n nriPlugins) stop() {
	if n.s != nil {
		n.s.Stop()
	}
}
