#!/bin/sh
# contrib/deps.sh build|run|test — the set-up step of `make build`, `make
# run` and `make test`: checks that the Debian packages (and Go) the step
# needs are installed. As root with apt-get it installs what is missing, as
# .ci/run does; otherwise it stops with one line naming the command to run.
#   PEAPOD_DEPS_INSTALL=0     only check, never install
#   PEAPOD_DEPS_PACKAGES=...  check these packages instead (tests)
set -eu
cd "$(dirname "$0")/.."

build="gcc libc6-dev musl-tools libseccomp-dev pkg-config make"
case "${1:-}" in
build) pkgs=$build ;;
run) pkgs="$build nftables iproute2" ;;
test) pkgs="$build nftables iproute2 git ca-certificates util-linux docker-registry iputils-ping containernetworking-plugins runc crun" ;;
*) echo "usage: contrib/deps.sh build|run|test" >&2; exit 2 ;;
esac
pkgs=${PEAPOD_DEPS_PACKAGES:-$pkgs}
install=${PEAPOD_DEPS_INSTALL:-1}
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	install=0
fi

if ! command -v dpkg >/dev/null 2>&1; then
	exit 0 # not Debian-like: the README lists the packages
fi
missing=
for p in $pkgs; do
	# "installed", not merely known: a removed package whose config files
	# remain ("config-files") makes `dpkg -s` succeed.
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$install" != 1 ]; then
		echo "peapod needs the packages$missing: run sudo apt-get install -y$missing" >&2
		exit 1
	fi
	echo "installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086 # one word per package
	apt-get install -y --no-install-recommends $missing >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends $missing >&2; }
fi

# Go, the version go.mod names; the Makefile adds /usr/local/go/bin to PATH
# (sudo's secure_path lacks it).
if [ -z "${PEAPOD_DEPS_PACKAGES:-}" ] && ! command -v "${GO:-go}" >/dev/null 2>&1; then
	v=$(awk '/^go /{print $2; exit}' go.mod)
	if [ "$install" != 1 ] || ! command -v curl >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
		echo "peapod needs Go $v in /usr/local/go: see https://go.dev/dl/ (or run sudo .ci/run's steps)" >&2
		exit 1
	fi
	echo "installing Go $v in /usr/local/go from the Go module proxy" >&2
	tmp=$(mktemp -d)
	curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$v.linux-amd64.zip"
	unzip -q "$tmp/go.zip" -d "$tmp"
	mv "$tmp/golang.org/toolchain@v0.0.1-go$v.linux-amd64" /usr/local/go
	rm -rf "$tmp"
fi
