package main

import (
	"log/slog"

	"github.com/peapod-cri/peapod/sandbox/helperbin"
)

// loadHelpers seals the helpers this binary embeds into memfds, before the
// runtime starts any keeper or runner. A helper that cannot be sealed is
// found as without embedding (beside the binary, else this binary).
func loadHelpers(log *slog.Logger) {
	for name, data := range map[string]string{helperbin.Runner: embeddedRunner, helperbin.Pause: embeddedPause} {
		if data == "" {
			continue
		}
		if err := helperbin.Load(name, data); err != nil {
			log.Warn("the embedded helper is not used", "helper", name, "err", err)
			continue
		}
		log.Debug("embedded helper sealed", "helper", name, "path", helperbin.Path(name), "bytes", len(data))
	}
}
