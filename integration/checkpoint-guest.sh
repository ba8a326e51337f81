#!/usr/bin/env bash
# The checkpoint and restore tests where CRIU can work: this host's kernel (6.13+, with
# the [vvar_vclock] mapping) stops Debian's criu 3.17.1 in its kernel probe,
# so TestCheckpointContainerReason only sees the refusal here. In the qemu
# guest of ../shared/vm (Debian's 6.1 kernel) `criu check` passes:
# TestCheckpointContainerReason dumps a running container and checks the
# archive, TestRestoreFromCheckpoint restores one from its archive.
# CKPT_RUN picks the tests (a -test.run pattern; default: the checkpoint,
# escape and restore tests).
# CKPT_KUBELET=PATH (a kubelet binary, e.g. the one make e2e-kubelet caches
# in /var/cache/peapod-test/kubelet-v1.37.2; that directory is shared into
# the guest, so the binary must lie below it) adds TestKubeletCheckpoint:
# the kubelet's /checkpoint API, then a restore of its archive.
#
# The guest image has neither criu nor iptables-restore (CRIU's network
# lock): the host's binaries and their libraries are shared in and run
# through wrappers (same Debian release, so the libraries match). Needs
# `apt-get install criu` on the host. Binaries are built here, as
# integration/cgroupv2.sh does (building in the emulated guest is slow).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
TAGS=$(cat build-tags.txt)
VM_RUN=${VM_RUN:-../shared/vm/vm-run.sh}
criu=$(command -v criu) || { echo "checkpoint-guest: criu not installed on the host (apt-get install criu)" >&2; exit 1; }
xtables=$(readlink -f "$(command -v iptables-restore)")

# CKPT_RUN (CKPT_TESTS, its older name) picks the tests: the guest is slow
# to start, so they share one boot.
CKPT_RUN=${CKPT_RUN:-${CKPT_TESTS:-}}
kubelet_env=
if [ -n "${CKPT_KUBELET:-}" ]; then
  CKPT_RUN=${CKPT_RUN:-^(TestCheckpointContainerReason|TestEscapeCheckpointUpperSwap|TestRestoreFromCheckpoint|TestKubeletCheckpoint)\$}
  kubelet_env="PEAPOD_KUBELET=$CKPT_KUBELET"
fi
CKPT_RUN=${CKPT_RUN:-^(TestCheckpointContainerReason|TestEscapeCheckpointUpperSwap|TestRestoreFromCheckpoint)\$}
out=bin/checkpoint-guest
kit=$(mktemp -d /tmp/peapod-criu-kit.XXXXXX)
trap 'rm -rf "$out" "$kit"' EXIT
rm -rf "$out" && mkdir -p "$out" "$kit/bin" "$kit/lib"
# The shipped single binary, as make build makes it (runner and keeper
# embedded), so the guest runs what an operator installs.
make --no-print-directory build BIN="$out/peapod" GO="$GO" >/dev/null
$GO test -c -tags "$TAGS" -o "$out/integration.test" ./integration/
$GO test -tags "$TAGS" -count=1 -run '^TestBusyboxRootfsRuns$' ./integration/testenv/ >/dev/null

# TestEscapeCheckpointUpperSwap's atomic-exchange helper: the guest has no gcc.
awk '/^const exchangeSource = `/{f=1; sub(/^const exchangeSource = `/, ""); print; next} f && /^`$/{exit} f' \
  integration/escape_checkpoint_test.go >"$kit/exchange.c"
gcc -static -O2 -o "$kit/exchange" "$kit/exchange.c"
cp "$criu" "$kit/criu"
cp "$xtables" "$kit/xtables"
cp -r /usr/lib/x86_64-linux-gnu/xtables "$kit/xtables-modules"
for l in $(ldd "$criu" "$xtables" | awk '/=>/ {print $3}' | sort -u); do cp -Ln "$l" "$kit/lib/"; done
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/criu "$@"\n' "$kit" "$kit" >"$kit/bin/criu"
for n in iptables-restore ip6tables-restore; do
  printf '#!/bin/sh\nXTABLES_LIBDIR=%s/xtables-modules LD_LIBRARY_PATH=%s/lib exec %s/xtables %s "$@"\n' "$kit" "$kit" "$kit" "$n" >"$kit/bin/$n"
done
chmod +x "$kit"/bin/*

export CGV2_VM_EXTRA_PACKAGES=${CGV2_VM_EXTRA_PACKAGES:-docker-registry,nftables,systemd,systemd-sysv,dbus}
export CGV2_VM_CACHE=${CGV2_VM_CACHE:-/var/cache/peapod-cgv2-vm/pk-$(printf %s "$CGV2_VM_EXTRA_PACKAGES" | md5sum | cut -c1-8)}
"$VM_RUN" --backend tcg --mem 3G --timeout "${CKPT_TIMEOUT:-2400}" \
  --share /var/cache/peapod-test --share "$kit" --env PEAPOD_TEST_TIMEOUT_SCALE=3 --env PEAPOD_TEST_EXCHANGE="$kit/exchange" -- \
  bash -c "set -e; uname -r
    # AppArmor hidden, as integration/cgroupv2.sh does without apparmor_parser.
    if grep -q Y /sys/module/apparmor/parameters/enabled 2>/dev/null; then
      echo N >/run/apparmor-off && mount --bind /run/apparmor-off /sys/module/apparmor/parameters/enabled
    fi
    export PATH=$kit/bin:\$PATH
    criu check 2>/dev/null
    mkdir -p /tmp/peapod-bin && cp $out/peapod* /tmp/peapod-bin/ && export PEAPOD_BINARY=/tmp/peapod-bin/peapod
    cd integration && $kubelet_env ../$out/integration.test -test.count=1 -test.timeout=20m -test.v -test.run '$CKPT_RUN'"
