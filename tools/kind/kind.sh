#!/bin/bash
# make kind / make kind-down: a kind cluster named "peapod" whose node runs
# peapod, on podman (Debian's; no Docker engine), built offline.
#   kind.sh up     build what is missing (cached), create the cluster, wait
#                  until the node is Ready, kubectl works and CoreDNS is up,
#                  print the kubeconfig path
#   kind.sh down   remove the cluster, its volumes and podman network, the
#                  iptables chains and rules netavark made for it, the node
#                  image, /lib/modules if up made it, the kubeconfig; then
#                  check that nothing of it is left
# Needs root. The cluster's kubeconfig: $KIND_STATE/kubeconfig.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PATH=$PATH:/usr/local/go/bin
KIND_CACHE=${KIND_CACHE:-/var/cache/peapod-test}
KIND_STATE=${KIND_STATE:-/var/lib/peapod-kind}
CLUSTER=peapod
modver() { awk -v m="$1" '$1 == "require" && $2 == m {print $3; exit} $1 == m && $2 ~ /^v/ {print $2; exit}' "$2"; }
K8S_VERSION=$(modver k8s.io/kubernetes "$here/go.mod")
KIND_VERSION=$(modver sigs.k8s.io/kind "$here/go.mod")
IMAGE=localhost/peapod/kind-node:$K8S_VERSION
KIND=$KIND_CACHE/kind-$KIND_VERSION/kind
KUBECTL=$KIND_CACHE/kubernetes-$K8S_VERSION/kubectl
KUBECONFIG=$KIND_STATE/kubeconfig
# podman with runc and ulimits root can have (contrib/kind/containers.conf).
export CONTAINERS_CONF=$repo/contrib/kind/containers.conf
export KIND_EXPERIMENTAL_PROVIDER=podman
log() { echo "kind: $*" >&2; }

need_packages() {
	local missing=()
	command -v podman >/dev/null || missing+=(podman)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		log "missing ${missing[*]}: apt-get install ${missing[*]} (as root)"
		exit 1
	fi
	log "installing ${missing[*]}"
	apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
}

up() {
	need_packages
	mkdir -p "$KIND_STATE"
	fw_snapshot # before podman runs at all (node-image.sh imports with it)
	# kind mounts /lib/modules into the node; an empty one will do.
	if [ ! -e /lib/modules ]; then
		mkdir /lib/modules
		touch "$KIND_STATE/made-lib-modules"
	fi
	"$here/build-bins.sh"
	"$here/node-image.sh" "$IMAGE"
	if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
		log "cluster $CLUSTER exists: make kind-down first"
		exit 1
	fi
	log "creating cluster $CLUSTER"
	"$KIND" create cluster --name "$CLUSTER" --image "$IMAGE" \
		--config "$repo/contrib/kind/kind-config.yaml" --kubeconfig "$KUBECONFIG" --wait 5m
	# The kind network's subnets and bridge: what down's clean-up of
	# netavark's rules matches.
	podman network inspect kind --format '{{range .Subnets}}{{.Subnet}} {{end}}{{.NetworkInterface}}' >"$KIND_STATE/kind-network"
	kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
	kubectl wait --for=condition=Ready node --all --timeout=300s
	kubectl -n kube-system rollout status deployment/coredns --timeout=300s
	kubectl get --raw /readyz >/dev/null
	kubectl get nodes -o wide
	echo "kubeconfig: $KUBECONFIG"
}

# The host's firewall before the cluster's network existed: netavark (podman's
# network stack, iptables driver) adds chains and rules for the kind network
# and, shared by every podman network, NETAVARK_FORWARD and the
# NETAVARK-HOSTPORT-* chains with the jumps to them, and leaves the shared
# ones when the network goes. down removes what is new since this snapshot
# and belongs to the kind network, or to no podman container any more.
fw_snapshot() {
	[ -e "$KIND_STATE/fw-before" ] && return 0 # an earlier up that failed: its snapshot counts
	local t
	for t in iptables ip6tables; do
		command -v $t-save >/dev/null || continue
		$t-save >"$KIND_STATE/$t.before"
	done
	nft list tables >"$KIND_STATE/nft-tables.before" 2>/dev/null || true
	# What podman makes on its first container and keeps: its cgroupfs
	# parent and netavark's runtime directory.
	: >"$KIND_STATE/podman-dirs.before"
	local d
	for d in $(podman_dirs); do
		[ -e "$d" ] && echo "$d" >>"$KIND_STATE/podman-dirs.before"
	done
	touch "$KIND_STATE/fw-before"
}

# podman_dirs lists podman's cgroupfs parent in every hierarchy and
# netavark's runtime directory.
podman_dirs() {
	find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name libpod_parent 2>/dev/null
	echo /run/containers/networks
}

# podman_dirs_clean removes what podman_dirs lists that was not there before
# up, once no podman container is left: the cgroups if empty.
podman_dirs_clean() {
	[ -e "$KIND_STATE/podman-dirs.before" ] && [ -z "$(podman ps -aq)" ] || return 0
	local d
	for d in $(podman_dirs); do
		[ -e "$d" ] || continue
		grep -qxF "$d" "$KIND_STATE/podman-dirs.before" && continue
		case "$d" in
		/sys/fs/cgroup/*) find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true ;;
		*) rm -rf "$d" ;;
		esac
	done
}

# fw_new FAMILY prints, per table, the chains (":CHAIN") and rules ("-A ...")
# that were not in the snapshot, as "table<TAB>line".
fw_new() {
	local t=$1
	[ -e "$KIND_STATE/$t.before" ] || return 0
	$t-save | awk -v before="$KIND_STATE/$t.before" '
		BEGIN {
			while ((getline l < before) > 0) {
				if (l ~ /^\*/) bt = substr(l, 2)
				else if (l ~ /^:/) { split(l, a, " "); chain[bt SUBSEP a[1]] = 1 }
				else if (l ~ /^-A /) rule[bt SUBSEP l] = 1
			}
		}
		/^\*/ { table = substr($0, 2); next }
		/^:/ { if (!((table SUBSEP $1) in chain)) print table "\t" $1; next }
		/^-A / { if (!((table SUBSEP $0) in rule)) print table "\t" $0 }'
}

# fw_ours FAMILY prints the new chains and rules that are the kind
# network's: rules that name its subnets or bridge or jump to a chain of
# it, chains holding such rules (netavark's per-network chains), and, once
# no podman container is left, every new NETAVARK chain and the jumps to it.
fw_ours() {
	local t=$1 net all
	net=$(cat "$KIND_STATE/kind-network" 2>/dev/null || true)
	all=no
	[ -z "$(podman ps -aq)" ] && all=yes
	fw_new "$t" | awk -F'\t' -v net="$net" -v all="$all" '
		{ tb[NR] = $1; ln[NR] = $2 }
		END {
			n = split(net, keys, " ")
			for (i = 1; i <= NR; i++) if (ln[i] ~ /^:NETAVARK/ && all == "yes") ours[tb[i] SUBSEP substr(ln[i], 2)] = 1
			for (i = 1; i <= NR; i++) {
				if (ln[i] !~ /^-A /) continue
				split(ln[i], f, " ")
				for (k = 1; k <= n; k++) if (keys[k] != "" && index(ln[i], keys[k])) { mine[i] = 1; if (f[2] ~ /^NETAVARK-/ && f[2] !~ /^NETAVARK-HOSTPORT/) ours[tb[i] SUBSEP f[2]] = 1 }
			}
			for (i = 1; i <= NR; i++) {
				if (ln[i] !~ /^-A /) continue
				nf = split(ln[i], f, " ")
				for (j = 1; j < nf; j++) if ((f[j] == "-j" || f[j] == "-g") && ((tb[i] SUBSEP f[j+1]) in ours)) mine[i] = 1
				if ((tb[i] SUBSEP f[2]) in ours) mine[i] = 0 # goes with its chain
			}
			for (i = 1; i <= NR; i++) if (mine[i]) print tb[i] "\trule\t" ln[i]
			for (k in ours) { split(k, p, SUBSEP); print p[1] "\tchain\t" p[2] }
		}'
}

# fw_clean removes what fw_ours finds, with iptables-restore --noflush (it
# reads the rules as iptables-save quoted them): the rules first, then the
# chains flushed and deleted; then the iptables-nft tables the snapshot did
# not have, if nothing is left in them.
fw_clean() {
	local t table in
	for t in iptables ip6tables; do
		command -v $t-save >/dev/null && [ -e "$KIND_STATE/$t.before" ] || continue
		in=$(fw_ours "$t")
		[ -n "$in" ] || continue
		for table in $(echo "$in" | cut -f1 | sort -u); do
			{
				echo "*$table"
				echo "$in" | awk -F'\t' -v tb="$table" '$1 == tb && $2 == "rule" { sub(/^-A /, "-D ", $3); print $3 }'
				echo "$in" | awk -F'\t' -v tb="$table" '$1 == tb && $2 == "chain" { print "-F " $3 }'
				echo "$in" | awk -F'\t' -v tb="$table" '$1 == tb && $2 == "chain" { print "-X " $3 }'
				echo COMMIT
			} | $t-restore --noflush || log "$t: could not remove the kind network's rules in table $table"
		done
	done
	local fam name
	[ -e "$KIND_STATE/nft-tables.before" ] || return 0
	nft list tables 2>/dev/null | while read -r _ fam name; do
		grep -qx "table $fam $name" "$KIND_STATE/nft-tables.before" && continue
		case "$fam" in ip) t=iptables ;; ip6) t=ip6tables ;; *) continue ;; esac
		case "$name" in nat | filter) ;; *) continue ;; esac
		# Made by iptables-nft for netavark: removed once nothing but its
		# empty base chains is left.
		$t-save -t "$name" | grep -vE '^(#|\*|COMMIT$|:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) )' | grep -q . ||
			nft delete table "$fam" "$name"
	done
}

# fw_leftovers prints the new firewall chains and rules that are still the
# kind network's, and what netavark made that the snapshot did not have.
fw_leftovers() {
	local t
	for t in iptables ip6tables; do
		command -v $t-save >/dev/null || continue
		fw_ours "$t" | sed "s/^/$t /"
	done
	local iface
	iface=$(awk '{print $NF}' "$KIND_STATE/kind-network" 2>/dev/null || true)
	[ -n "$iface" ] && ip link show "$iface" >/dev/null 2>&1 && echo "bridge $iface"
	[ -e /run/containers/networks/aardvark-dns/kind ] && echo "aardvark-dns config of network kind"
	if [ -e "$KIND_STATE/podman-dirs.before" ] && [ -z "$(podman ps -aq)" ]; then
		local d
		for d in $(podman_dirs); do
			[ -e "$d" ] && ! grep -qxF "$d" "$KIND_STATE/podman-dirs.before" && echo "podman's $d"
		done
	fi
	true
}

# leftovers prints what of the cluster is still on this machine.
leftovers() {
	podman ps -a --filter "label=io.x-k8s.kind.cluster=$CLUSTER" --format 'container {{.Names}}'
	podman volume ls --filter "label=$CLUSTER-control-plane" --format 'volume {{.Name}}'
	podman image exists "$IMAGE" && echo "image $IMAGE"
	podman network exists kind && echo "podman network kind"
	[ -e "$KUBECONFIG" ] && echo "kubeconfig $KUBECONFIG"
	[ -e "$KIND_STATE/made-lib-modules" ] && echo "/lib/modules (made by make kind)"
	true
}

down() {
	command -v podman >/dev/null || { log "no podman: nothing to remove"; return 0; }
	local ids
	ids=$(podman ps -aq --no-trunc --filter "label=io.x-k8s.kind.cluster=$CLUSTER")
	if [ -x "$KIND" ]; then
		"$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || true
	fi
	# What kind leaves: a node it could not delete, the network, the image.
	podman ps -aq --filter "label=io.x-k8s.kind.cluster=$CLUSTER" | xargs -r podman rm -f -v >/dev/null
	podman volume ls -q --filter "label=$CLUSTER-control-plane" | xargs -r podman volume rm -f >/dev/null
	if podman network exists kind && [ -z "$(podman ps -aq --filter network=kind)" ]; then
		podman network rm kind >/dev/null
	fi
	podman image exists "$IMAGE" && podman rmi "$IMAGE" >/dev/null
	fw_clean
	podman_dirs_clean
	rm -f "$KUBECONFIG"
	if [ -e "$KIND_STATE/made-lib-modules" ]; then
		rmdir /lib/modules 2>/dev/null || log "/lib/modules is no longer empty: kept"
		rm -f "$KIND_STATE/made-lib-modules"
	fi
	local left id
	left=$(
		leftovers
		fw_leftovers
		for id in $ids; do
			# The node's cgroups and mounts (its systemd's) go with its container.
			find /sys/fs/cgroup -maxdepth 4 -type d -name "*$id*" 2>/dev/null | sed 's/^/cgroup /'
			grep -F "$id" /proc/self/mountinfo | awk '{print "mount " $5}'
		done
		true # (pipefail: grep finding nothing is the good case)
	)
	if [ -n "$left" ]; then
		log "left behind:"
		echo "$left" >&2
		exit 1
	fi
	rm -f "$KIND_STATE/fw-before" "$KIND_STATE"/*.before "$KIND_STATE/kind-network"
	rmdir "$KIND_STATE" 2>/dev/null || true
	log "removed cluster $CLUSTER, its node image, network and firewall rules"
}

case ${1:-} in
up) up ;;
down) down ;;
*) echo "usage: kind.sh up|down" >&2; exit 2 ;;
esac
