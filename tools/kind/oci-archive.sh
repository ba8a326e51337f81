#!/bin/bash
# Packs a directory into a one-layer OCI image archive (an OCI layout in a
# tar, as `ctr images export` and `podman save --format oci-archive` write
# it), named in the index the way containerd records names, so
# `peapod image import` stores it under that name.
# Usage: oci-archive.sh NAME:TAG ROOTDIR OUT.tar ENTRYPOINT...
# The layer is reproducible (sorted, owned by root, mtime 0): the same
# directory gives the same image ID.
set -euo pipefail
ref=$1 root=$2 out=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
blobs=$work/blobs/sha256
mkdir -p "$blobs"

json_array() { # the arguments as a JSON array of strings (no quoting in them)
	local out="" a
	for a in "$@"; do out+="${out:+,}\"$a\""; done
	echo "[$out]"
}
# blob FILE: moves FILE into blobs/ by its digest; prints "DIGEST SIZE".
blob() {
	local sum size
	sum=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$blobs/$sum"
	echo "sha256:$sum $size"
}

tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$root" -cf "$work/layer" .
read -r layer layer_size < <(blob "$work/layer")
cat >"$work/config" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":$(json_array "$@"),"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["$layer"]},"history":[{"created_by":"peapod tools/kind/oci-archive.sh"}]}
JSON
read -r config config_size < <(blob "$work/config")
cat >"$work/manifest" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$layer","size":$layer_size}]}
JSON
read -r manifest manifest_size < <(blob "$work/manifest")
cat >"$work/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest","size":$manifest_size,"annotations":{"io.containerd.image.name":"$ref","org.opencontainers.image.ref.name":"${ref##*:}"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$work" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
