#!/usr/bin/env bash
# make test-oci-handlers-v2: pods on an external OCI runtime handler run by
# Debian's crun, inside the cgroup v2 guest of ../shared/vm. crun 1.8.1
# refuses this host's hybrid cgroup layout (TestOCIRuntimeHandler skips it
# here); in the guest, whose only hierarchy is cgroup v2, it runs. As
# integration/cgroupv2-full.sh: the binaries are built here, systemd is the
# guest's PID 1 (integration/guest-systemd.sh), peapod and crun use the
# systemd cgroup driver, and on UML (no nftables) the network is CNI.
#
# Two phases (CGV2_OCI_SUITES, default "handlers kubelet"), one boot:
#   handlers  TestOCIRuntimeHandler on crun (run, exec, tty exec, logs,
#             stats, update, stop, exit codes, a daemon crash with the
#             keeper holding stdio) and TestOCIRuntimeHandlerFeatureChecks
#             (crun 1.8 has no `features`: no recursive read-only mounts);
#   kubelet   TestKubeletFeatures' runtimeClassName check only: the stock
#             kubelet 1.37 with a real etcd + kube-apiserver on loopback
#             holding a RuntimeClass whose handler is crun.
# A test that skips is a failure here: each must report PASS.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
TAGS=$(cat build-tags.txt)
VM_RUN=${VM_RUN:-../shared/vm/vm-run.sh}
SUITES=${CGV2_OCI_SUITES:-handlers kubelet}
CACHE=/var/cache/peapod-test
KUBELET=${KUBELET:-$CACHE/kubelet-v1.37.2}
KUBE_APISERVER=${PEAPOD_KUBE_APISERVER:-$CACHE/kubernetes-v1.37.2/kube-apiserver}
ETCD=${PEAPOD_ETCD:-$CACHE/etcd-v3.6.17/etcd}
# The runtimes the handler test runs pods on (crun is the point; runc can
# be added: CGV2_OCI_RUNTIMES="/usr/bin/crun /usr/bin/runc").
RUNTIMES=${CGV2_OCI_RUNTIMES:-/usr/bin/crun}

if [ ! -x "$VM_RUN" ]; then
  echo "test-oci-handlers-v2: FAILED: $VM_RUN (the cgroup v2 guest) is missing" >&2
  exit 1
fi
case " $SUITES " in *" kubelet "*)
  for f in "$KUBELET" "$KUBE_APISERVER" "$ETCD"; do
    [ -x "$f" ] || { echo "test-oci-handlers-v2: FAILED: $f is missing (make kubelet; tools/kind/build-bins.sh kube-apiserver etcd)" >&2; exit 1; }
  done ;;
esac

t0=$SECONDS
# Built on the host: compiling inside the emulated guest is very slow.
out=bin/oci-handlers-v2
rm -rf "$out" && mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
# The shipped single binary, as make build makes it (runner and keeper
# embedded), so the guest runs what an operator installs.
make --no-print-directory build BIN="$out/peapod" GO="$GO" >/dev/null
$GO test -c -tags "$TAGS" -o "$out/integration.test" ./integration/
# The busybox image's .debs and rootfs, cached here (the guest has no
# network) and shared into the guest at the same path.
$GO test -tags "$TAGS" -count=1 -run '^TestBusyboxRootfsRuns$' ./integration/testenv/ >/dev/null
# Debian's CNI plugins (bridge, host-local, portmap) for the UML guest.
if [ ! -x "$CACHE/cni-plugins/usr/lib/cni/portmap" ]; then
  mkdir -p "$CACHE/debs" && rm -rf "$CACHE/cni-plugins.tmp"
  (cd "$CACHE/debs" && ls containernetworking-plugins_*.deb >/dev/null 2>&1 || apt-get -q -o APT::Sandbox::User=root download containernetworking-plugins >/dev/null)
  dpkg-deb -x "$(ls "$CACHE"/debs/containernetworking-plugins_*.deb | head -1)" "$CACHE/cni-plugins.tmp"
  mv "$CACHE/cni-plugins.tmp" "$CACHE/cni-plugins"
fi
echo "test-oci-handlers-v2: built in $((SECONDS - t0))s"

# make test-cgroupv2-full's image plus crun (without apparmor: UML has
# none). The kit's cache key does not cover extra packages: the list keys
# the directory, so this image is this target's own.
export CGV2_VM_EXTRA_PACKAGES=docker-registry,nftables,systemd,systemd-sysv,dbus,iptables,crun
export CGV2_VM_CACHE=${CGV2_VM_CACHE:-/var/cache/peapod-cgv2-vm/pk-$(printf %s "$CGV2_VM_EXTRA_PACKAGES" | md5sum | cut -c1-8)}

backend=${CGV2_VM_BACKEND:-}
if [ -z "$backend" ]; then
  backend=tcg
  if "$VM_RUN" --backend uml --timeout 120 -- sh -c 'test -f /sys/fs/cgroup/cgroup.controllers && test -x /usr/bin/crun' >/dev/null 2>&1; then
    backend=uml
  fi
fi
network=builtin
if [ "$backend" = uml ]; then network=cni; fi
echo "test-oci-handlers-v2: running $SUITES in $VM_RUN --backend $backend (systemd as PID 1, cgroup driver systemd, network $network)"

# What runs inside, as the service of the guest's systemd.
cat >"$out/guest.sh" <<EOF
#!/bin/bash
set -u
bin=/tmp/peapod-bin
export PEAPOD_BINARY=\$bin/peapod PEAPOD_TEST_CGROUP_DRIVER=systemd
echo "guest: \$(uname -r), cgroup controllers: \$(cat /sys/fs/cgroup/cgroup.controllers); \$(crun --version | head -1)"
if [ "$network" = cni ]; then
  # UML's kernel has x_tables but no nf_tables: portmap uses iptables-legacy.
  update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy
  update-alternatives --quiet --set ip6tables /usr/sbin/ip6tables-legacy
  modprobe -a ip_tables iptable_filter iptable_nat ip6_tables ip6table_filter ip6table_nat \
    xt_comment xt_multiport xt_mark xt_addrtype xt_conntrack xt_MASQUERADE xt_nat 2>/dev/null || true
  export PEAPOD_TEST_CNI_BIN=$CACHE/cni-plugins/usr/lib/cni
fi
# The qemu guest's kernel has AppArmor; its image no apparmor_parser.
if grep -q Y /sys/module/apparmor/parameters/enabled 2>/dev/null; then
  echo N >/run/apparmor-off && mount --bind /run/apparmor-off /sys/module/apparmor/parameters/enabled
fi
# UML's /proc/cpuinfo has no "cpu MHz", without which the kubelet's
# cAdvisor does not start: added in a mount namespace of the kubelet
# phase's own (cgroupv2-full.sh).
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
# On the root file system (ext4), not the guest's tmpfs /tmp.
mkdir -p /var/tmp/peapod-cgv2 && export TMPDIR=/var/tmp/peapod-cgv2
rc=0
cd integration
for suite in $SUITES; do
  s0=\$SECONDS
  case \$suite in
  handlers)
    PEAPOD_OCI_RUNTIMES="$RUNTIMES" \$bin/integration.test -test.count=1 -test.v -test.timeout 30m \
      -test.run '^(TestOCIRuntimeHandler|TestOCIRuntimeHandlerFeatureChecks)\$' >/run/handlers.log 2>&1 || rc=1
    cat /run/handlers.log
    # Each runtime's subtest and the feature check must have passed: a skip is no pass.
    for want in $(for r in $RUNTIMES; do printf 'TestOCIRuntimeHandler/%s ' "${r##*/}"; done)TestOCIRuntimeHandlerFeatureChecks; do
      grep -q -- "--- PASS: \$want " /run/handlers.log || { echo "test-oci-handlers-v2: \$want did not pass" >&2; rc=1; }
    done ;;
  kubelet)
    PEAPOD_KUBELET=\$bin/$(basename "$KUBELET") PEAPOD_KUBE_APISERVER=$KUBE_APISERVER PEAPOD_ETCD=$ETCD \
      PEAPOD_EXTERNAL_RUNTIME=/usr/bin/crun PEAPOD_KUBELET_FEATURES_FOCUS='runtimeClassName on crun' \
      with_cpu_mhz \$bin/integration.test -test.count=1 -test.v -test.timeout 30m -test.run '^TestKubeletFeatures\$' >/run/kubelet.log 2>&1 || rc=1
    cat /run/kubelet.log
    grep -q '^kubelet features: 1 passed, 0 failed' /run/kubelet.log || { echo "test-oci-handlers-v2: the runtimeClassName check on crun did not pass" >&2; rc=1; } ;;
  *) echo "test-oci-handlers-v2: unknown suite \$suite" >&2; rc=1 ;;
  esac
  echo "test-oci-handlers-v2: \$suite in \$((SECONDS - s0))s"
done
exit \$rc
EOF
chmod +x "$out/guest.sh"

g0=$SECONDS
grc=0
"$VM_RUN" --backend "$backend" --mem 4G --cpus 2 --timeout "${CGV2_TIMEOUT:-3600}" \
  --share "$CACHE" --env PEAPOD_TEST_TIMEOUT_SCALE=10 --env PEAPOD_REQUIRE_SYSTEMD=1 -- \
  bash -c "set -e
    # Executables on the 9p/hostfs share are slow to page in: from tmpfs.
    mkdir -p /tmp/peapod-bin && cp $out/* /tmp/peapod-bin/ && cp $KUBELET /tmp/peapod-bin/
    exec integration/guest-systemd.sh /tmp/peapod-bin/guest.sh" || grc=$?
echo "test-oci-handlers-v2: guest run $backend exit $grc in $((SECONDS - g0))s, total $((SECONDS - t0))s"
exit "$grc"
