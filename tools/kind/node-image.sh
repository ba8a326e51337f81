#!/bin/bash
# Builds the kind node image whose container runtime is peapod, offline:
#  - the root filesystem: Debian bookworm from debootstrap (Debian's
#    packages: systemd as PID 1, nftables/iptables, libseccomp for peapod),
#    cached as a tar;
#  - kind's entrypoint and systemd units, from sigs.k8s.io/kind's module
#    source (the version tools/kind/go.mod pins), less containerd's;
#  - kubeadm, kubectl, kubelet (tools/kind/build-bins.sh), /kind/version;
#  - peapod (bin/, make build) as a systemd service, the kubelet pointed at it;
#  - the control plane's images (kube-apiserver, kube-controller-manager,
#    kube-scheduler, kube-proxy, etcd, CoreDNS), packed by oci-archive.sh
#    and imported into the node's peapod store with `peapod image import`.
# Binaries, the rootfs and the image archives are cached by version under
# $KIND_CACHE, so a rebuild only repacks.
# Usage: node-image.sh IMAGE   (needs root, podman, debootstrap)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${1:?usage: node-image.sh IMAGE}
export PATH=$PATH:/usr/local/go/bin
KIND_CACHE=${KIND_CACHE:-/var/cache/peapod-test}
SUITE=bookworm
modver() { awk -v m="$1" '$1 == "require" && $2 == m {print $3; exit} $1 == m && $2 ~ /^v/ {print $2; exit}' "$2"; }
K8S_VERSION=$(modver k8s.io/kubernetes "$here/go.mod")
KIND_VERSION=$(modver sigs.k8s.io/kind "$here/go.mod")
ETCD_VERSION=$(modver go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
COREDNS_VERSION=$(modver github.com/coredns/coredns "$here/coredns/go.mod")
k8sbin=$KIND_CACHE/kubernetes-$K8S_VERSION
log() { echo "node-image: $*" >&2; }

"$here/build-bins.sh"
for f in "$repo/bin/peapod"; do # it embeds the runner and the keeper
	[ -x "$f" ] || { log "$f missing: make build first"; exit 1; }
done

# ---- root filesystem (cached)
rootfs_tar=$KIND_CACHE/kind-node-rootfs-$SUITE.tar
if [ ! -s "$rootfs_tar" ]; then
	log "debootstrap $SUITE into $rootfs_tar (about 2 min)"
	tmp=$(mktemp -d /var/tmp/kind-rootfs.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	debootstrap --variant=minbase \
		--include=systemd,systemd-sysv,dbus,iptables,nftables,iproute2,ca-certificates,kmod,mount,procps,libseccomp2,util-linux,conntrack \
		"$SUITE" "$tmp/root" http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1 ||
		{ tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
	rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
	tar --numeric-owner --xattrs -C "$tmp/root" -cf "$rootfs_tar.tmp" .
	mv "$rootfs_tar.tmp" "$rootfs_tar"
	rm -rf "$tmp"
	trap - EXIT
fi

# ---- control-plane images (cached OCI archives)
images=$KIND_CACHE/kind-images-$K8S_VERSION
mkdir -p "$images"
debian=$(mktemp -d) # the rootfs's /usr and /etc: libraries and tools for the images
trap 'rm -rf "$debian"' EXIT
tar -C "$debian" -xf "$rootfs_tar" ./usr ./lib ./lib64 ./etc/alternatives 2>/dev/null || true
# add_libs DIR BIN: copies the shared libraries BIN links (glibc and the
# like, the build host's Debian = the node's) from the rootfs into DIR.
add_libs() {
	local to=$1 bin=$2 lib
	for lib in $(ldd "$bin" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do
		[ -e "$to$lib" ] || install -D -m 0755 "$debian$lib" "$to$lib"
	done
}
# pack NAME:TAG ARCHIVE BIN DEST [EXTRA...]: an image of BIN at DEST (its
# entrypoint) with its libraries, a minimal /etc, and the rootfs's EXTRA
# binaries with theirs.
pack() {
	local ref=$1 out=$images/$2.tar bin=$3 dest=$4 dir x
	shift 4
	[ -s "$out" ] && return 0
	log "packing $ref"
	dir=$(mktemp -d)
	install -D -m 0755 "$bin" "$dir$dest"
	add_libs "$dir" "$bin"
	for x in "$@"; do
		install -D -m 0755 "$debian$x" "$dir$x"
		add_libs "$dir" "$debian$x"
		if [ "${x##*/}" = xtables-nft-multi ]; then
			for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
				ln -s xtables-nft-multi "$dir${x%/*}/$t"
			done
		fi
	done
	mkdir -p "$dir/etc" "$dir/tmp" "$dir/var/run"
	chmod 1777 "$dir/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
	echo 'hosts: files dns' >"$dir/etc/nsswitch.conf"
	"$here/oci-archive.sh" "$ref" "$dir" "$out" "$dest"
	rm -rf "$dir"
}
for c in kube-apiserver kube-controller-manager kube-scheduler; do
	pack "registry.k8s.io/$c:$K8S_VERSION" $c "$k8sbin/$c" /usr/local/bin/$c
done
# kube-proxy (nftables mode) runs nft; iptables too, for its clean-up of
# the iptables modes.
pack "registry.k8s.io/kube-proxy:$K8S_VERSION" kube-proxy "$k8sbin/kube-proxy" /usr/local/bin/kube-proxy \
	/usr/sbin/nft /usr/sbin/xtables-nft-multi
pack "registry.k8s.io/etcd:${ETCD_VERSION#v}-0" etcd "$KIND_CACHE/etcd-$ETCD_VERSION/etcd" /usr/local/bin/etcd
pack "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" coredns "$KIND_CACHE/coredns-$COREDNS_VERSION/coredns" /coredns
rm -rf "$debian"
trap - EXIT

# ---- the node's filesystem
stage=$(mktemp -d /var/tmp/kind-node.XXXXXX)
cleanup() { rm -rf "$stage"; }
trap cleanup EXIT
log "assembling the node in $stage"
tar --numeric-owner --xattrs -C "$stage/" -xf "$rootfs_tar"
root=$stage
kindsrc=$(cd "$here" && go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files
[ -d "$kindsrc" ] || (cd "$here" && go mod download sigs.k8s.io/kind)
install -D -m 0755 "$kindsrc/usr/local/bin/entrypoint" "$root/usr/local/bin/entrypoint"
mkdir -p "$root/kind/bin" "$root/etc/kubernetes/manifests" "$root/etc/systemd/system/kubelet.service.d"
install -m 0755 "$kindsrc"/kind/bin/* "$root/kind/bin/"
install -m 0644 "$kindsrc"/etc/sysctl.d/* "$root/etc/sysctl.d/"
for f in kubelet.service kubelet.slice undo-mount-hacks.service kubelet.service.d/10-kubeadm.conf kubelet.service.d/11-kind.conf; do
	install -m 0644 "$kindsrc/etc/systemd/system/$f" "$root/etc/systemd/system/$f"
done
echo "$K8S_VERSION" >"$root/kind/version"
for b in kubeadm kubectl; do install -m 0755 "$k8sbin/$b" "$root/usr/bin/$b"; done
install -m 0755 "$KIND_CACHE/kubelet-$K8S_VERSION" "$root/usr/bin/kubelet"
install -m 0755 "$KIND_CACHE/crictl-v1.36.0" "$root/usr/local/bin/crictl" 2>/dev/null || true
install -m 0755 "$repo/bin/peapod" "$root/usr/local/bin/"
install -D -m 0644 "$repo/contrib/kind/peapod.toml" "$root/etc/peapod/peapod.toml"
install -m 0644 "$repo/contrib/kind/peapod.service" "$root/etc/systemd/system/peapod.service"
install -m 0644 "$repo/contrib/kind/20-peapod.conf" "$root/etc/systemd/system/kubelet.service.d/20-peapod.conf"
install -D -m 0644 "$repo/contrib/kind/default-kubelet" "$root/etc/default/kubelet"
install -m 0644 "$repo/contrib/crictl.yaml" "$root/etc/crictl.yaml"
echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
systemctl --root="$root" enable kubelet.service undo-mount-hacks.service peapod.service >/dev/null 2>&1
systemctl --root="$root" mask systemd-binfmt.service >/dev/null 2>&1
# The images, in the store the node's peapod opens (/var/lib/peapod is on
# the node's /var volume, which podman fills from the image).
state=$(mktemp -d)
"$repo/bin/peapod" image import --root "$root/var/lib/peapod" --state "$state" "$images"/*.tar >&2
rm -rf "$state"

log "importing $image into podman"
tar --numeric-owner --xattrs -C "$root" -c . | podman import \
	--change 'ENV container=docker' \
	--change 'STOPSIGNAL SIGRTMIN+3' \
	--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
	- "$image" >/dev/null
log "built $image"
