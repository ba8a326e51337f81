#!/bin/bash
# make kind / make kind-down: a kind cluster named "peapod" whose node runs
# peapod, on podman (Debian's; no Docker engine), built offline.
#   kind.sh up     build what is missing (cached), create the cluster, wait
#                  until the node is Ready, kubectl works and CoreDNS is up,
#                  print the kubeconfig path
#   kind.sh down   remove the cluster, its volumes and podman network, the
#                  node image, /lib/modules if up made it, the kubeconfig;
#                  then check that nothing of it is left
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
	kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
	kubectl wait --for=condition=Ready node --all --timeout=300s
	kubectl -n kube-system rollout status deployment/coredns --timeout=300s
	kubectl get --raw /readyz >/dev/null
	kubectl get nodes -o wide
	echo "kubeconfig: $KUBECONFIG"
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
	rm -f "$KUBECONFIG"
	if [ -e "$KIND_STATE/made-lib-modules" ]; then
		rmdir /lib/modules 2>/dev/null || log "/lib/modules is no longer empty: kept"
		rm -f "$KIND_STATE/made-lib-modules"
	fi
	rmdir "$KIND_STATE" 2>/dev/null || true
	local left id
	left=$(
		leftovers
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
	log "removed cluster $CLUSTER, its node image and network"
}

case ${1:-} in
up) up ;;
down) down ;;
*) echo "usage: kind.sh up|down" >&2; exit 2 ;;
esac
