package main

import (
	"log/slog"

	"github.com/peapod-cri/peapod/sandbox/helperbin"
	"github.com/peapod-cri/peapod/sandbox/selfmem"
)

// loadHelpers seals the helpers this binary embeds into memfds, before the
// runtime starts any keeper or runner. A helper that cannot be sealed is
// found as without embedding (beside the binary, else this binary).
func loadHelpers(log *slog.Logger) {
	for name, data := range map[string]string{helperbin.Runner: embeddedRunner, helperbin.Pause: embeddedPause} {
		if data == "" {
			continue
		}
		err := helperbin.Load(name, data)
		// Copied or not, data is not read again: its pages leave the
		// daemon's memory (else ~13 MB of its RSS for good).
		if err := selfmem.DropString(data); err != nil {
			log.Warn("the embedded helper's pages stay resident", "helper", name, "err", err)
		}
		if err != nil {
			log.Warn("the embedded helper is not used", "helper", name, "err", err)
			continue
		}
		log.Debug("embedded helper sealed", "helper", name, "path", helperbin.Path(name), "bytes", len(data))
	}
}
