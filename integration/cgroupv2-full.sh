#!/usr/bin/env bash
# make test-cgroupv2-full: the whole `make critest` and `make e2e-kubelet`
# (kubelet 1.37, cgroupDriver systemd, no failCgroupV1 override) inside the
# cgroup v2 guest of ../shared/vm, with systemd as PID 1
# (integration/guest-systemd.sh) and peapod on the systemd driver. As
# integration/cgroupv2.sh, the binaries are built here and run there; the
# registry fixtures run in the guest (docker-registry is in its image).
#
# Backend: UML where it boots (seconds; one CPU, no nftables, no AppArmor):
# peapod then runs with the CNI network (Debian's bridge + host-local +
# portmap, through iptables-legacy) instead of its nftables bridge, and
# critest's AppArmor specs skip. CGV2_VM_BACKEND=tcg runs the same under
# qemu TCG (~15x slower; the built-in network; AppArmor on, with the
# image's apparmor_parser, so critest's AppArmor specs run there).
#
# CGV2_FULL_SUITES="resources critest kubelet" (the default) picks what
# runs; "resources" is make test-cgroupv2 (the resource tests, OOMKilled
# 20/20, TestExecPathsAgree, the systemd driver tests) in this target's
# image, in its own two boots: those tests nest cgroups below the guest's
# root, which a systemd as PID 1 owns in the other boot. The
# kubelet's checks run CGV2_FULL_KUBELET_PARALLEL (6) at a time: 18 pods
# at once starve the guest's one CPU past every wait.
# Each suite ends with its usual summary line; the wrappers' pass-count
# checks are those of make critest / make e2e-kubelet.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
TAGS=$(cat build-tags.txt)
VM_RUN=${VM_RUN:-../shared/vm/vm-run.sh}
SUITES=${CGV2_FULL_SUITES:-resources critest kubelet}
CRITEST_TOOLS=${CRITEST_TOOLS:-bin/critest-tools}
KUBELET=${KUBELET:-/var/cache/peapod-test/kubelet-v1.37.2}
CACHE=/var/cache/peapod-test

if [ ! -x "$VM_RUN" ]; then
  echo "test-cgroupv2-full: FAILED: $VM_RUN (the cgroup v2 guest) is missing" >&2
  exit 1
fi
for f in "$CRITEST_TOOLS/critest" "$CRITEST_TOOLS/ginkgo" "$KUBELET"; do
  [ -x "$f" ] || { echo "test-cgroupv2-full: FAILED: $f is missing (make bin/critest-tools/critest kubelet)" >&2; exit 1; }
done

t0=$SECONDS
# Built on the host: compiling inside the emulated guest is very slow.
out=bin/cgroupv2-full
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
# The shipped single binary, as make build makes it (runner and keeper
# embedded), so the guest runs what an operator installs.
make --no-print-directory build BIN="$out/peapod" GO="$GO" >/dev/null
$GO test -c -tags "$TAGS" -o "$out/integration.test" ./integration/
$GO test -c -tags "$TAGS" -o "$out/critest.test" ./integration/critest/
cp "$CRITEST_TOOLS/critest" "$CRITEST_TOOLS/ginkgo" "$out/"
cp "$KUBELET" "$out/"
# The busybox image's .debs and rootfs, cached here (the guest has no
# network) and shared into the guest at the same path; the nginx .debs
# critest's images need are in the same cache.
$GO test -tags "$TAGS" -count=1 -run '^TestBusyboxRootfsRuns$' ./integration/testenv/ >/dev/null
# Debian's CNI plugins (bridge, host-local, portmap) for the UML guest.
if [ ! -x "$CACHE/cni-plugins/usr/lib/cni/portmap" ]; then
  mkdir -p "$CACHE/debs" && rm -rf "$CACHE/cni-plugins.tmp"
  (cd "$CACHE/debs" && ls containernetworking-plugins_*.deb >/dev/null 2>&1 || apt-get -q -o APT::Sandbox::User=root download containernetworking-plugins >/dev/null)
  dpkg-deb -x "$(ls "$CACHE"/debs/containernetworking-plugins_*.deb | head -1)" "$CACHE/cni-plugins.tmp"
  mv "$CACHE/cni-plugins.tmp" "$CACHE/cni-plugins"
fi
echo "test-cgroupv2-full: built in $((SECONDS - t0))s"

# The guest image of make test-cgroupv2 plus iptables (portmap under UML)
# and apparmor (apparmor_parser, for the qemu guest's AppArmor specs). The
# kit's cache key does not cover extra packages: the list keys the directory.
export CGV2_VM_EXTRA_PACKAGES=docker-registry,nftables,systemd,systemd-sysv,dbus,iptables,apparmor
export CGV2_VM_CACHE=${CGV2_VM_CACHE:-/var/cache/peapod-cgv2-vm/pk-$(printf %s "$CGV2_VM_EXTRA_PACKAGES" | md5sum | cut -c1-8)}

backend=${CGV2_VM_BACKEND:-}
if [ -z "$backend" ]; then
  backend=tcg
  if "$VM_RUN" --backend uml --timeout 120 -- sh -c 'test -f /sys/fs/cgroup/cgroup.controllers && test -x /usr/bin/docker-registry' >/dev/null 2>&1; then
    backend=uml
  fi
fi
network=builtin
if [ "$backend" = uml ]; then network=cni; fi
guest_suites=
for s in $SUITES; do
  case $s in
  resources) ;;
  critest | kubelet) guest_suites="$guest_suites $s" ;;
  *) echo "test-cgroupv2-full: FAILED: unknown suite $s in CGV2_FULL_SUITES" >&2; exit 1 ;;
  esac
done
rc=0
case " $SUITES " in
*" resources "*)
  # make test-cgroupv2 in this image (the exported CGV2_VM_* above): with
  # AppArmor on in the qemu guest. Its backend is its own choice unless
  # CGV2_VM_BACKEND names one: it needs nftables, which UML has not.
  r0=$SECONDS
  VM_RUN=$VM_RUN GO=$GO integration/cgroupv2.sh || rc=$?
  echo "test-cgroupv2-full: resources (make test-cgroupv2): exit $rc in $((SECONDS - r0))s"
  ;;
esac
if [ -z "$guest_suites" ]; then
  echo "test-cgroupv2-full: exit $rc; total $((SECONDS - t0))s"
  exit "$rc"
fi
echo "test-cgroupv2-full: running$guest_suites in $VM_RUN --backend $backend (systemd as PID 1, cgroup driver systemd, network $network)"

# What runs inside, as the service of the guest's systemd.
cat >"$out/guest.sh" <<EOF
#!/bin/bash
set -u
bin=/tmp/peapod-bin
export PEAPOD_BINARY=\$bin/peapod PEAPOD_TEST_CGROUP_DRIVER=systemd
echo "guest: \$(uname -r), cgroup controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)"
if [ "$network" = cni ]; then
  # UML's kernel has x_tables but no nf_tables: portmap and the tests'
  # guard rules use iptables-legacy.
  # portmap runs both iptables and ip6tables.
  update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy
  update-alternatives --quiet --set ip6tables /usr/sbin/ip6tables-legacy
  modprobe -a ip_tables iptable_filter iptable_nat ip6_tables ip6table_filter ip6table_nat \
    xt_comment xt_multiport xt_mark xt_addrtype xt_conntrack xt_MASQUERADE xt_nat 2>/dev/null || true
  export PEAPOD_TEST_CNI_BIN=$CACHE/cni-plugins/usr/lib/cni
fi
if grep -q Y /sys/module/apparmor/parameters/enabled 2>/dev/null; then
  # AppArmor in the kernel (the qemu guest; the image has apparmor_parser,
  # so it is not hidden as make test-cgroupv2 does: a bind mount on a /sys
  # file also makes the kernel refuse user-namespaced containers their
  # sysfs mount): peapod and
  # critest load profiles through securityfs; critest runs apparmor_parser
  # with sudo, which root does not need (and the image has not).
  mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
  printf '#!/bin/sh\nexec "\$@"\n' >\$bin/sudo && chmod +x \$bin/sudo
  echo "guest: AppArmor enabled, \$(apparmor_parser --version | head -1)"
fi
# UML's /proc/cpuinfo has no "cpu MHz", and the kubelet's cAdvisor refuses
# to start without a clock speed ("could not detect clock speed"): the
# kubelet suite runs with the line added, in a mount namespace of its own
# (any mount on /proc makes the kernel refuse user-namespaced containers a
# proc mount of their own, which critest checks).
if grep -q "User Mode Linux" /proc/cpuinfo; then
  { cat /proc/cpuinfo; echo "cpu MHz		: 2000.000"; } >/run/cpuinfo
fi
with_cpu_mhz() {
  if [ -s /run/cpuinfo ]; then
    unshare --mount --propagation unchanged -- bash -c 'mount --bind /run/cpuinfo /proc/cpuinfo && exec "\$@"' bash "\$@"
  else
    "\$@"
  fi
}
# The daemons' and kubelet's directories on the root file system (ext4):
# the guest's /tmp is tmpfs, which the 6.1 kernel cannot idmap-mount, so
# peapod would offer no user namespaces there.
mkdir -p /var/tmp/peapod-cgv2 && export TMPDIR=/var/tmp/peapod-cgv2
rc=0
for suite in$guest_suites; do
  s0=\$SECONDS
  case \$suite in
  critest)
    mkdir -p $PWD/_output/critest-cgv2
    (cd integration/critest && CRITEST_TOOLS=\$bin PEAPOD_BIN=\$bin/peapod CRITEST_REPORT_DIR=$PWD/_output/critest-cgv2 CRITEST_SUITE_TIMEOUT=${CRITEST_SUITE_TIMEOUT:-100m} \
      \$bin/critest.test -test.count=1 -test.v -test.timeout 150m -test.run '^TestCritest\$') || rc=1 ;;
  kubelet)
    (cd integration && PEAPOD_KUBELET=\$bin/$(basename "$KUBELET") with_cpu_mhz \
      \$bin/integration.test -test.count=1 -test.v -test.timeout 60m -test.parallel ${CGV2_FULL_KUBELET_PARALLEL:-6} -test.run '^TestKubeletE2E\$') || rc=1 ;;
  esac
  echo "test-cgroupv2-full: \$suite in \$((SECONDS - s0))s"
done
exit \$rc
EOF
chmod +x "$out/guest.sh"

# A focused critest (CRITEST_FOCUS, CRITEST_MIN_PASSED: see
# integration/critest) goes through to the guest.
envs=()
for v in CRITEST_FOCUS CRITEST_MIN_PASSED; do
  if [ -n "${!v:-}" ]; then envs+=(--env "$v=${!v}"); fi
done
run_guest() {
"$VM_RUN" --backend "$backend" --mem 4G --cpus 2 --timeout "${CGV2_TIMEOUT:-7200}" \
  --share "$CACHE" --env PEAPOD_TEST_TIMEOUT_SCALE=10 --env PEAPOD_REQUIRE_SYSTEMD=1 ${envs[@]+"${envs[@]}"} -- \
  bash -c "set -e
    # Executables on the 9p/hostfs share are slow to page in: from tmpfs.
    mkdir -p /tmp/peapod-bin && cp $out/* /tmp/peapod-bin/
    exec integration/guest-systemd.sh /tmp/peapod-bin/guest.sh"
}
g0=$SECONDS
grc=0
run_guest || grc=$?
[ "$rc" != 0 ] || rc=$grc
echo "test-cgroupv2-full: exit $rc; guest run ${backend} exit $grc in $((SECONDS - g0))s, total $((SECONDS - t0))s"
exit "$rc"
