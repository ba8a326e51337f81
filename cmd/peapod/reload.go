package main

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/peapod-cri/peapod/config"
	"github.com/peapod-cri/peapod/image"
	"github.com/peapod-cri/peapod/network"
)

// reloader applies the safe keys of a changed config file on SIGHUP:
// log_level, the image trust files (registries_conf, registries_conf_dir,
// registries_d, signature_policy) and cni_conf_dir. Pods and containers are not
// touched. Other changed keys are logged as ignored until a restart.
type reloader struct {
	path   string          // --config; "" means there is nothing to reload
	flags  map[string]bool // config keys set by flags: those keep the flag's value
	mu     sync.Mutex      // guards cfg: Status reads it while a reload writes it
	cfg    config.Config   // in effect
	level  *slog.LevelVar
	images *image.Store
	net    *network.Reloadable
	log    *slog.Logger
}

// current is the config in effect.
func (r *reloader) current() config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

func (r *reloader) reload(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.path == "" {
		r.log.Warn("SIGHUP: no --config file to reload")
		return
	}
	next, err := config.Load(r.path)
	if err == nil {
		next = keepFlags(next, r.cfg, r.flags)
		err = next.Validate()
	}
	if err != nil {
		r.log.Error("SIGHUP: config not reloaded; the running one stays", "config", r.path, "err", err)
		return
	}
	var applied, ignored, failed []string
	for _, key := range config.Changed(r.cfg, next) {
		if !slices.Contains(config.ReloadableKeys, key) {
			ignored = append(ignored, key)
			continue
		}
		if slices.Contains(imageSourceKeys, key) {
			continue // applied together below
		}
		if err := r.apply(ctx, key, next); err != nil {
			r.log.Error("SIGHUP: key not reloaded; the running value stays", "key", key, "err", err)
			failed = append(failed, key)
			continue
		}
		applied = append(applied, key)
	}
	// The image trust files are applied as one (a policy may rely on a
	// registries.d that changes with it), and read again even when their
	// keys did not change.
	var changedSources []string
	for _, key := range config.Changed(r.cfg, next) {
		if slices.Contains(imageSourceKeys, key) {
			changedSources = append(changedSources, key)
		}
	}
	if err := r.images.SetSources(imageSources(next)); err != nil {
		r.log.Error("SIGHUP: registries config and signature policy not reloaded; the running ones stay", "err", err)
		failed = append(failed, changedSources...)
	} else {
		if len(changedSources) > 0 {
			r.log.Info("image trust files changed", "keys", changedSources)
		}
		applied = append(applied, changedSources...)
		r.cfg.RegistriesConf, r.cfg.RegistriesConfDir = next.RegistriesConf, next.RegistriesConfDir
		r.cfg.RegistriesD, r.cfg.SignaturePolicy = next.RegistriesD, next.SignaturePolicy
	}
	if !slices.Contains(applied, "cni_conf_dir") && !slices.Contains(failed, "cni_conf_dir") {
		if err := r.net.ReloadCNIConfDir(ctx, r.cfg.CNIConfDir); err != nil {
			r.log.Error("SIGHUP: CNI config not reloaded", "err", err)
		}
	}
	r.log.Info("SIGHUP: config reloaded", "config", r.path, "applied", applied, "failed", failed)
	if len(ignored) > 0 {
		r.log.Warn("SIGHUP: changed keys need a restart of peapod to take effect; ignored", "keys", ignored)
	}
}

func (r *reloader) apply(ctx context.Context, key string, next config.Config) error {
	switch key {
	case "log_level":
		l, err := next.SlogLevel()
		if err != nil {
			return err
		}
		r.log.Info("log level changed", "from", r.cfg.LogLevel, "to", next.LogLevel)
		r.level.Set(l)
		r.cfg.LogLevel = next.LogLevel
	case "cni_conf_dir":
		if err := r.net.ReloadCNIConfDir(ctx, next.CNIConfDir); err != nil {
			return err
		}
		r.log.Info("CNI config dir changed", "from", r.cfg.CNIConfDir, "to", next.CNIConfDir)
		r.cfg.CNIConfDir = next.CNIConfDir
	}
	return nil
}

// keepFlags gives the keys set by flags their running value: flags win
// over the file, on reload as at start.
func keepFlags(next, running config.Config, flags map[string]bool) config.Config {
	for name, field := range flagNames {
		if flags[name] {
			*field(&next) = *field(&running)
		}
	}
	return next
}

// imageSourceKeys are the keys naming image trust files (image.Sources).
var imageSourceKeys = []string{"registries_conf", "registries_conf_dir", "registries_d", "signature_policy"}

// imageSources are the image trust files cfg names.
func imageSources(cfg config.Config) image.Sources {
	return image.Sources{
		RegistriesConf:    registriesConf(cfg.RegistriesConf),
		RegistriesConfDir: cfg.RegistriesConfDir,
		RegistriesD:       cfg.RegistriesD,
		SignaturePolicy:   cfg.SignaturePolicy,
	}
}

// registriesConf is the file used for registries_conf: the host's
// /etc/containers/registries.conf when the key is empty and that exists.
func registriesConf(v string) string {
	if v == "" {
		if _, err := os.Stat(hostRegistriesConf); err == nil {
			return hostRegistriesConf
		}
	}
	return v
}
