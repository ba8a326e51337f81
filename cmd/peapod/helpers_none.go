//go:build !peapod_embed

package main

// Built without the peapod_embed tag (a plain go build): the daemon runs
// peapod-runner and peapod-pause from beside its binary, or itself in
// their roles (package sandbox/helperbin).
var embeddedRunner, embeddedPause string
