#!/bin/bash
# Builds the Go binaries a kind node of peapod needs, one at a time (the
# machine's cores are shared), each cached by version under $KIND_CACHE so a
# rerun costs nothing: kubeadm, kubectl, kubelet and the control-plane
# components of k8s.io/kubernetes (this directory's go.mod pins the
# release), the kind CLI, etcd (tools/kind/etcd) and CoreDNS
# (tools/kind/coredns). Built as `make kubelet` builds the kubelet (cgo on,
# no -trimpath), so the packages already in Go's build cache from the
# kubelet and node e2e builds are reused: a cold kube-apiserver otherwise
# takes tens of minutes on this machine's shared cores. The images carry
# the glibc libraries the binaries link (node-image.sh).
# Usage: build-bins.sh [NAME...]   (default: all); prints the cache dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PATH=$PATH:/usr/local/go/bin
GO=${GO:-go}
KIND_CACHE=${KIND_CACHE:-/var/cache/peapod-test}
NICE=${NICE:-nice -n 10}

modver() { awk -v m="$1" '$1 == "require" && $2 == m {print $3; exit} $1 == m && $2 ~ /^v/ {print $2; exit}' "$2"; }
K8S_VERSION=$(modver k8s.io/kubernetes "$here/go.mod")
KIND_VERSION=$(modver sigs.k8s.io/kind "$here/go.mod")
ETCD_VERSION=$(modver go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
COREDNS_VERSION=$(modver github.com/coredns/coredns "$here/coredns/go.mod")
k8sdir=$KIND_CACHE/kubernetes-$K8S_VERSION

minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
major=${K8S_VERSION#v}; major=${major%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# build OUT MODULE_DIR PACKAGE LDFLAGS: skipped when OUT exists.
build() {
	local out=$1 dir=$2 pkg=$3 ldflags=$4
	[ -x "$out" ] && return 0
	mkdir -p "$(dirname "$out")"
	echo "building $out ($pkg)" >&2
	local start=$SECONDS
	(cd "$dir" && $NICE "$GO" build -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
	mv "$out.tmp" "$out"
	echo "built $out in $((SECONDS - start)) s" >&2
}

all="kubeadm kubectl kind kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns"
for name in ${@:-$all}; do
	case $name in
	kind) build "$KIND_CACHE/kind-$KIND_VERSION/kind" "$here" sigs.k8s.io/kind "" ;;
	etcd) build "$KIND_CACHE/etcd-$ETCD_VERSION/etcd" "$here/etcd" go.etcd.io/etcd/server/v3 \
		"-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}" ;;
	coredns) build "$KIND_CACHE/coredns-$COREDNS_VERSION/coredns" "$here/coredns" . "" ;;
	# The kubelet runs on the node (Debian, glibc): the one make kubelet
	# builds (tools/kubelet, same release) when there, else built here.
	kubelet) build "$KIND_CACHE/kubelet-$K8S_VERSION" "$here" k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags" ;;
	kube*) build "$k8sdir/$name" "$here" "k8s.io/kubernetes/cmd/$name" "$k8s_ldflags" ;;
	*) echo "build-bins.sh: unknown binary $name" >&2; exit 2 ;;
	esac
done
