#!/bin/sh
# build.sh OUT builds the container runner, peapod-runner, into OUT: the one
# build of it (make build, testenv.BuildPeapod and so the guest scripts).
#
# It runs twice per StartContainer (the runner, then libcontainer's init
# re-executing it), so its start-up is on every container start's path.
# Linked statically (libseccomp.a, glibc's libc.a): no dynamic loader, no
# shared objects to map and relocate before main, ~1.5 ms a process on the
# 2-core test machine. osusergo and netgo keep glibc's NSS out (static glibc
# cannot load it; libcontainer reads /etc/passwd itself). Not PIE, as
# go build makes it by default: nothing in the runner's own code is laid out
# differently from the dynamic build it replaces.
set -eu
out=${1:?usage: build.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
go=${GO:-go}
tags="$(cat "$repo/build-tags.txt") osusergo netgo"
cd "$repo"
CGO_ENABLED=1 exec "$go" build -tags "$tags" \
	-ldflags '-s -w -linkmode external -extldflags "-static"' \
	-o "$out" ./cmd/peapod-runner
