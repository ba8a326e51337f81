#!/usr/bin/env bash
# make test-powercut: real power cuts. peapod runs in a User-Mode Linux
# guest (../shared/vm's cached image and kernel) with its root on a second,
# persistent disk image (ubd1). The guest's page cache lives in the UML
# process, so a SIGKILL of that process loses every write the guest had not
# yet submitted to the disk: a power cut. Each boot (boot_test.go) starts
# peapod on the disk, checks what the churn before the cut left, removes
# everything every CLEAN_EVERY boots and counts leftovers, then churns until
# the cut. A last boot checks, removes everything and counts leftovers
# again; the summary fails on any violation or leftover.
#   POWERCUT_CUTS (30)  POWERCUT_CLEAN_EVERY (5)  POWERCUT_MAX_DELAY_MS (12000)
#   POWERCUT_KEEP=1 keeps the work directory (journal, results, daemon logs).
set -euo pipefail
cd "$(dirname "$0")/../.."
WT=$(pwd -P)
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
TAGS=$(cat build-tags.txt)
CUTS=${POWERCUT_CUTS:-30}
CLEAN_EVERY=${POWERCUT_CLEAN_EVERY:-5}
MAX_DELAY_MS=${POWERCUT_MAX_DELAY_MS:-12000}
BOOT_TIMEOUT=${POWERCUT_BOOT_TIMEOUT:-400}
VM_KIT=${VM_KIT:-$WT/../../shared/vm}
[ -x "$VM_KIT/vm-run.sh" ] || VM_KIT=/work/shared/vm
CACHE=/var/cache/peapod-test

t0=$(date +%s)
WORK=$(mktemp -d /var/tmp/peapod-powercut.XXXXXX)
VM_PID=
cleanup() {
  if [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; then kill -KILL -- "-$VM_PID" 2>/dev/null || true; fi
  if [ "${POWERCUT_KEEP:-0}" = 1 ]; then echo "powercut: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Built on the host: building in the guest is slow.
mkdir -p "$WORK/bin"
# The shipped single binary, as make build makes it (runner and keeper
# embedded), so the guest runs what an operator installs.
make --no-print-directory build BIN="$WORK/bin/peapod" GO="$GO" >/dev/null
$GO test -c -tags "$TAGS" -o "$WORK/bin/powercut.test" ./integration/powercut/
# The busybox rootfs, cached on the host (the guest has no network).
$GO test -tags "$TAGS" -count=1 -run '^TestBusyboxRootfsRuns$' ./integration/testenv/ >/dev/null
# Debian's CNI plugins (bridge, host-local): the UML kernel has no
# nftables, so the built-in network cannot run there.
if [ ! -x "$CACHE/cni-plugins/usr/lib/cni/bridge" ]; then
  mkdir -p "$CACHE/debs" && rm -rf "$CACHE/cni-plugins.tmp"
  (cd "$CACHE/debs" && ls containernetworking-plugins_*.deb >/dev/null 2>&1 || apt-get -q -o APT::Sandbox::User=root download containernetworking-plugins >/dev/null)
  dpkg-deb -x "$(ls "$CACHE"/debs/containernetworking-plugins_*.deb | head -1)" "$CACHE/cni-plugins.tmp"
  mv "$CACHE/cni-plugins.tmp" "$CACHE/cni-plugins"
fi

# The guest image of make test-cgroupv2 (docker-registry in it).
export CGV2_VM_CACHE=${CGV2_VM_CACHE:-/var/cache/peapod-cgv2-vm} CGV2_VM_EXTRA_PACKAGES=docker-registry,nftables
"$VM_KIT/vm-run.sh" --build-only >/dev/null
IMG=$(ls -d "$CGV2_VM_CACHE"/image-r* | tail -1)

# The persistent data disk.
truncate -s 4G "$WORK/data.img"
mkfs.ext4 -q -F -L peapod-pc "$WORK/data.img"

SHARE=$WORK/run
mkdir -p "$SHARE/devlinks" "$WORK/uml"
cp "$VM_KIT/guest-init.sh" "$SHARE/init.sh"
ln -s /proc/self/fd "$SHARE/devlinks/fd"
ln -s /proc/self/fd/1 "$SHARE/devlinks/stdout"; ln -s /proc/self/fd/2 "$SHARE/devlinks/stderr"
{
  echo "none $WT hostfs ro,x-mount.mkdir,$WT 0 0"
  echo "none $CACHE hostfs ro,x-mount.mkdir,$CACHE 0 0"
  echo "none $WORK hostfs x-mount.mkdir,$WORK 0 0"
} >"$SHARE/fstab.uml"
echo "CGV2_CWD=$WT/integration/powercut; CGV2_CMD=(bash $WT/integration/powercut/guest.sh)" >"$SHARE/cmd.sh"

# boot N MODE: one guest; returns when it ends or is cut.
boot() {
  local n=$1 mode=$2 delay_ms cut=0
  rm -f "$SHARE/rc" "$WORK/root.cow"
  cat >"$SHARE/env.sh" <<EOF
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
export POWERCUT_WORK=$WORK POWERCUT_BOOT=$n POWERCUT_MODE=$mode POWERCUT_CNI_BIN=$CACHE/cni-plugins/usr/lib/cni
EOF
  # setsid: its PID is its process group's, killed whole by the cut.
  TMPDIR=/dev/shm setsid "$IMG/linux.uml" mem=1536M umid="pc$$-$n" uml_dir="$WORK/uml" \
    ubd0="$WORK/root.cow,$IMG/rootfs.img" ubd1="$WORK/data.img" root=/dev/ubda rw init=/sbin/cgv2-stub \
    cgv2.run="$SHARE" cgv2.be=uml cgroup_no_v1=all con=null ssl=null con0=null,fd:1 con1=null,fd:4 con2=null,fd:5 \
    quiet loglevel=3 </dev/null >"$WORK/console-$n.log" 2>&1 4>"$WORK/out-$n.log" 5>"$WORK/err-$n.log" &
  VM_PID=$!
  disown "$VM_PID" # no job notice when the cut kills it; bash still reaps it
  if [ "$mode" != final ]; then
    local until=$((SECONDS + BOOT_TIMEOUT))
    while [ ! -e "$WORK/churning-$n" ] && kill -0 "$VM_PID" 2>/dev/null && [ "$SECONDS" -lt "$until" ]; do sleep 0.2; done
    if [ -e "$WORK/churning-$n" ]; then
      delay_ms=$(( (RANDOM * 32768 + RANDOM) % MAX_DELAY_MS ))
      sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
      kill -KILL -- "-$VM_PID" 2>/dev/null && cut=1
      echo "powercut: boot $n ($mode): cut ${delay_ms} ms into the churn"
    fi
  fi
  local end=$((SECONDS + BOOT_TIMEOUT))
  while kill -0 "$VM_PID" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
  if kill -0 "$VM_PID" 2>/dev/null; then
    kill -KILL -- "-$VM_PID" 2>/dev/null || true
    echo "powercut: boot $n ($mode): guest timed out after ${BOOT_TIMEOUT}s" >&2
  fi
  VM_PID=
  if [ "$cut" = 0 ]; then
    # Not cut: the guest ended by itself (the final boot, or a failure).
    local rc; rc=$(cat "$SHARE/rc" 2>/dev/null || echo none)
    echo "powercut: boot $n ($mode): guest ended, exit code $rc"
    if [ "$rc" != 0 ]; then
      echo "boot $n failed (exit $rc)" >>"$WORK/failures"
      tail -n 40 "$WORK/out-$n.log" "$WORK/err-$n.log" >&2 || true
    fi
  fi
}

for n in $(seq 1 "$CUTS"); do
  mode=churn
  [ $((n % CLEAN_EVERY)) = 1 ] && [ "$n" -gt 1 ] && mode=cleanup+churn
  boot "$n" "$mode"
done
boot $((CUTS + 1)) final

echo "powercut: $CUTS cuts in $(( $(date +%s) - t0 )) s"
POWERCUT_WORK=$WORK POWERCUT_CUTS=$CUTS "$WORK/bin/powercut.test" -test.run '^TestPowercutSummary$' -test.v -test.count=1 || {
  POWERCUT_KEEP=1; exit 1
}
