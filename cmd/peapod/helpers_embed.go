//go:build peapod_embed

package main

import _ "embed"

// The runner and the static keeper, built by make build into helpers/
// (git-ignored) before this binary, which then needs nothing beside it
// (package sandbox/helperbin).
var (
	//go:embed helpers/peapod-runner
	embeddedRunner string
	//go:embed helpers/peapod-pause
	embeddedPause string
)
