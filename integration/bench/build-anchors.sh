#!/usr/bin/env bash
# Builds the anchors `make bench` compares peapod with, from the Go module
# proxy, once per version, into $ANCHOR_CACHE (default /var/cache/peapod-test):
#   containerd-v2.4.2/  containerd, containerd-shim-runc-v2   (go install)
#   crio-v1.36.3/       crio, pinns, hostclamp
#   crictl-v1.36.0      crictl (the 50-pod density drives every runtime with it,
#                       as ../shared/critest/measure-density.sh does)
# CRI-O: `go install crio@v1.36.3` cannot work (the proxy answers 403 for the
# module's @v/list), so a throwaway wrapper module requires it and builds it
# with the tags upstream's Makefile picks on Debian 12 (as
# ../shared/critest/build-crio.sh does); pinns is compiled from the module's
# pinns/src; hostclamp (integration/bench/hostclamp) is the OCI-runtime
# wrapper CRI-O needs on a host without CAP_SYS_RESOURCE. containerd 1.6 is
# Debian's package; conmon, runc, tini and the CNI plugins come from Debian
# too (installed when missing). A directory is used only when complete: each
# build goes to a temporary directory renamed into place at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${ANCHOR_CACHE:=/var/cache/peapod-test}"
: "${CONTAINERD2_VERSION:=v2.4.2}"
: "${CRIO_VERSION:=v1.36.3}"
: "${CRICTL_VERSION:=v1.36.0}"
export PATH="/usr/local/go/bin:$PATH"

missing=()
for p in containerd runc conmon tini containernetworking-plugins libseccomp-dev pkg-config gcc libc6-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

C2="$ANCHOR_CACHE/containerd-$CONTAINERD2_VERSION"
if [[ ! -x "$C2/containerd" || ! -x "$C2/containerd-shim-runc-v2" ]]; then
  tmp=$(mktemp -d "$ANCHOR_CACHE/.containerd-build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "building containerd $CONTAINERD2_VERSION into $C2" >&2
  GOBIN="$tmp" nice -n 10 go install \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD2_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION"
  rm -rf "$C2" && mv "$tmp" "$C2"
  trap - EXIT
fi

CR="$ANCHOR_CACHE/crio-$CRIO_VERSION"
if [[ ! -x "$CR/crio" || ! -x "$CR/pinns" || ! -x "$CR/hostclamp" ]]; then
  tmp=$(mktemp -d "$ANCHOR_CACHE/.crio-build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "building CRI-O $CRIO_VERSION into $CR" >&2
  mkdir -p "$tmp/mod" "$tmp/bin"
  (
    cd "$tmp/mod"
    printf 'module peapod.local/crio\n\ngo 1.26\n' > go.mod
    go get "github.com/cri-o/cri-o/cmd/crio@$CRIO_VERSION"
    MOD=$(go list -m -f '{{.Dir}}' github.com/cri-o/cri-o)
    COMMIT=$(go list -m -f '{{.Origin.Hash}}' "github.com/cri-o/cri-o@$CRIO_VERSION" 2>/dev/null || true)
    TAGS="containers_image_ostree_stub exclude_graphdriver_btrfs btrfs_noversion containers_image_openpgp exclude_graphdriver_devicemapper seccomp"
    CGO_ENABLED=1 nice -n 10 go build -trimpath -tags "$TAGS" \
      -ldflags "-s -w -X github.com/cri-o/cri-o/internal/version.buildCommit=${COMMIT:-unknown}" \
      -o "$tmp/bin/crio" github.com/cri-o/cri-o/cmd/crio
    cp -r "$MOD/pinns" "$tmp/pinns" && chmod -R u+w "$tmp/pinns"
    gcc -std=c99 -O3 -Wall -Wextra -static -o "$tmp/bin/pinns" "$tmp"/pinns/src/*.c
    strip -s "$tmp/bin/pinns"
  )
  (cd "$HERE/hostclamp" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/bin/hostclamp" .)
  rm -rf "$CR" && mv "$tmp/bin" "$CR" && rm -rf "$tmp"
  trap - EXIT
fi
CT="$ANCHOR_CACHE/crictl-$CRICTL_VERSION"
if [[ ! -x "$CT" ]]; then
  # A wrapper module, as for CRI-O: `go install` asks for @v/list (403).
  tmp=$(mktemp -d "$ANCHOR_CACHE/.crictl-build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "building crictl $CRICTL_VERSION into $CT" >&2
  (
    cd "$tmp"
    printf 'module peapod.local/crictl\n\ngo 1.26\n' > go.mod
    go get -tool "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
    CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" \
      -o "$tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl
  )
  mv "$tmp/crictl" "$CT" && rm -rf "$tmp"
  trap - EXIT
fi
"$C2/containerd" --version >&2
"$CR/crio" --version 2>/dev/null | head -2 >&2
