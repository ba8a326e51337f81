# peapod — see README.md. Needs Go (go.mod's version) and gcc (cgo).
GO        ?= go
TAGS      := $(shell cat build-tags.txt)
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/peapod
# Flags for `make run`, e.g. make run ARGS="--log-level debug".
ARGS      ?=
# Go where the README puts it, also under sudo (whose PATH lacks it).
export PATH := $(PATH):/usr/local/go/bin
# The set-up step of build, run and test: installs missing Debian packages
# (and Go) when run as root, else names the command to run, in one line.
DEPS      := contrib/deps.sh

.PHONY: all build run test unit integration vet bench bench-all bench-scale fuzz clean test-cgroupv2 test-cgroupv2-full test-oci-handlers-v2 test-powercut critest install uninstall e2e-kubelet e2e-kubelet-skew e2e-kubelet-features kubelet e2e-node e2e-node-ci e2e-node-tools

all: build

# bin/peapod is the whole runtime: it embeds (tag peapod_embed) the
# container runner alone (cmd/peapod-runner, static: it starts containers
# faster than the daemon's binary; cmd/peapod-runner/build.sh) and the pod's keeper alone, C linked
# statically against musl (cmd/peapod-pause/build.sh: a fifth of the
# memory per pod of a keeper run from the daemon's binary), built first into
# $(HELPERS) (git-ignored). The daemon seals each into a memfd at start
# (sandbox/helperbin). A plain go build ./cmd/peapod embeds nothing and
# runs helpers found beside it, else itself in their roles.
HELPERS := cmd/peapod/helpers
build:
	@$(DEPS) build
	@mkdir -p $(HELPERS)
	GO="$(GO)" cmd/peapod-runner/build.sh $(HELPERS)/peapod-runner
	cmd/peapod-pause/build.sh $(HELPERS)/peapod-pause
	CGO_ENABLED=1 $(GO) build -tags "$(TAGS) peapod_embed" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/peapod
	@rm -f $(BIN)-runner $(BIN)-pause # an older build's: bin/peapod no longer runs them

# Starts peapod in the foreground with its embedded defaults (as root).
run:
	@$(DEPS) run
	@$(MAKE) --no-print-directory build
	./$(BIN) $(ARGS)

vet:
	$(GO) vet -tags "$(TAGS)" ./...

# Unit tests only: no root, no network, no kernel containers.
unit:
	$(GO) test -tags "$(TAGS)" -count=1 ./config/... ./cri/... ./cgroups/... ./oci/... ./sandbox/... ./nri/... ./checkpoint/...

# Everything, as root: unit tests, then the integration tests against a
# real daemon, registry, crictl and kernel containers.
test:
	@$(DEPS) test
	@$(MAKE) --no-print-directory vet
	$(GO) test -tags "$(TAGS)" -count=1 -timeout 30m ./...

integration:
	$(GO) test -tags "$(TAGS)" -count=1 -timeout 30m -v ./integration/...

# The cgroup unit tests and the resource integration tests under cgroup v2,
# then TestSystemdDriver under systemd as PID 1 (the systemd driver through
# D-Bus; integration/guest-systemd.sh boots it in the guest): directly on a
# v2 host, else built here and run in ../shared/vm's guest (UML where it
# boots, else qemu TCG). Fails when neither can run.
test-cgroupv2:
	GO=$(GO) integration/cgroupv2.sh

# Real power cuts (integration/powercut): peapod in a UML guest of
# ../shared/vm with its root on a persistent disk image, the guest killed
# (SIGKILL of the emulator) at random moments of a churn, POWERCUT_CUTS
# (30) times; fails on any pod neither listed nor cleanly absent, or any
# leftover. About 35-40 min on 2 shared cores; root.
test-powercut:
	GO=$(GO) integration/powercut/powercut.sh

# The CRI validation suite: critest v1.37.0 and the ginkgo CLI it runs
# under (--parallel), built from the Go module proxy through the tools
# module in tools/critest and kept in bin/critest-tools until its go.mod or
# go.sum changes. integration/critest builds critest's images, starts a
# registry and a private peapod, runs critest and prints
# "critest: N passed, N failed, N skipped"; it fails on any failed spec but
# the offline-impossible digest pull, on any skip but the named ones
# (AppArmor without AppArmor), and when
# fewer specs than expected ran or passed. Report: _output/critest/.
CRITEST_TOOLS := bin/critest-tools
CRI_TOOLS_VERSION := $(shell awk '$$1 == "sigs.k8s.io/cri-tools" {print $$2}' tools/critest/go.mod)
$(CRITEST_TOOLS)/critest: tools/critest/go.mod tools/critest/go.sum
	cd tools/critest && CGO_ENABLED=0 $(GO) test -c -trimpath \
		-ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRI_TOOLS_VERSION:v%=%)" \
		-o $(CURDIR)/$(CRITEST_TOOLS)/critest.tmp sigs.k8s.io/cri-tools/cmd/critest
	cd tools/critest && CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/$(CRITEST_TOOLS)/ginkgo github.com/onsi/ginkgo/v2/ginkgo
	mv $@.tmp $@

critest: build $(CRITEST_TOOLS)/critest
	CRITEST_TOOLS=$(CURDIR)/$(CRITEST_TOOLS) PEAPOD_BIN=$(CURDIR)/$(BIN) CRITEST_REPORT_DIR=$(CURDIR)/_output/critest \
		$(GO) test -tags "$(TAGS)" -count=1 -v -timeout 60m -run '^TestCritest$$' ./integration/critest/

# Installs for a node: `sudo make install`, or into a staging root with
# DESTDIR=/tmp/stage. The config is installed only where none exists, so an
# operator's file is never overwritten; likewise /etc/crictl.yaml.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(SYSCONFDIR)/systemd/system
DESTDIR    ?=

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/peapod
	rm -f $(DESTDIR)$(BINDIR)/peapod-runner $(DESTDIR)$(BINDIR)/peapod-pause # an older install's: now embedded in peapod
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/peapod/peapod.toml ]; then \
		echo "kept existing $(DESTDIR)$(SYSCONFDIR)/peapod/peapod.toml (the defaults: peapod config default)"; \
	else \
		echo "install -D -m 0644 config/peapod.toml $(DESTDIR)$(SYSCONFDIR)/peapod/peapod.toml"; \
		install -D -m 0644 config/peapod.toml $(DESTDIR)$(SYSCONFDIR)/peapod/peapod.toml; \
	fi
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's#/usr/local/bin/peapod#$(BINDIR)/peapod#' -e 's#/etc/peapod/#$(SYSCONFDIR)/peapod/#' \
		contrib/systemd/peapod.service > $(DESTDIR)$(UNITDIR)/peapod.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/peapod.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/crictl.yaml ]; then \
		echo "kept existing $(DESTDIR)$(SYSCONFDIR)/crictl.yaml (peapod's: contrib/crictl.yaml)"; \
	else \
		echo "install -D -m 0644 contrib/crictl.yaml $(DESTDIR)$(SYSCONFDIR)/crictl.yaml"; \
		install -D -m 0644 contrib/crictl.yaml $(DESTDIR)$(SYSCONFDIR)/crictl.yaml; \
	fi
	@echo "installed. With systemd: systemctl daemon-reload && systemctl enable --now peapod"

# Removes the binary and the unit; keeps the config, /etc/crictl.yaml and
# peapod's state (/var/lib/peapod), as package managers do. `peapod purge`
# (before this) removes the rest: README, "Remove peapod".
uninstall:
	@if [ -S /run/peapod/peapod.sock ]; then echo "warning: peapod seems to run (/run/peapod/peapod.sock exists): stop it first (systemctl disable --now peapod)" >&2; fi
	@echo "this keeps peapod's pods, state, bridge and config: peapod purge --config $(SYSCONFDIR)/peapod/peapod.toml (before uninstalling) removes them"
	rm -f $(DESTDIR)$(BINDIR)/peapod $(DESTDIR)$(BINDIR)/peapod-runner $(DESTDIR)$(BINDIR)/peapod-pause $(DESTDIR)$(UNITDIR)/peapod.service

# The performance suite (integration/bench/perf_bench_test.go, docs/performance.md):
# peapod (same CNI conflist as the anchors, and built-in network) against
# containerd 1.6 (Debian), containerd 2.4.2 and CRI-O 1.36.3 (built once from
# the module proxy by integration/bench/build-anchors.sh into
# /var/cache/peapod-test) in one run; p50/p99, ratio to the best anchor, goals
# of issue 21. Writes $(BENCH_JSON), then the results section of
# docs/performance.md from it (integration/bench/perfdoc). BENCH_QUICK=1:
# reduced sizes, a check of the harness only (its doc section says so).
# bench-all adds the image pull, streaming, network and host-network density
# benches.
# Stock kubelet e2e (integration/kubelet_e2e_test.go, as root): an
# unmodified kubelet built from k8s.io/kubernetes through the module proxy
# (tools/kubelet: v1.37.2; ~5-10 min cold on 2 idle cores, cached by version in
# KUBELET_CACHE), run standalone on peapod with static pods. Prints a
# PASS/FAIL table. PEAPOD_E2E_RUNTIME=containerd runs the same checks on
# Debian's containerd 1.6, the reference.
# tools/kubelet pins the current release (1.37); tools/kubelet-1.34 the
# oldest minor still in support, for version skew: `make e2e-kubelet-skew`
# (= make e2e-kubelet KUBELET_MODULE=tools/kubelet-1.34). Each binary is
# cached under its own version, so switching costs nothing once built.
KUBELET_MODULE  ?= tools/kubelet
KUBELET_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2; exit}' $(KUBELET_MODULE)/go.mod)
KUBELET_CACHE   ?= /var/cache/peapod-test
KUBELET         := $(KUBELET_CACHE)/kubelet-$(KUBELET_VERSION)
KUBELET_LDFLAGS := $(foreach v,gitVersion=$(KUBELET_VERSION) gitTreeState=clean,-X k8s.io/component-base/version.$(v))

kubelet: $(KUBELET)

$(KUBELET):
	mkdir -p $(KUBELET_CACHE)
	cd $(KUBELET_MODULE) && $(GO) build -ldflags "$(KUBELET_LDFLAGS)" -o $@.tmp k8s.io/kubernetes/cmd/kubelet
	mv $@.tmp $@

e2e-kubelet: $(KUBELET)
	PEAPOD_KUBELET=$(KUBELET) $(GO) test -tags "$(TAGS)" -count=1 -timeout 20m -v -parallel 32 -run '^TestKubeletE2E$$' ./integration/

e2e-kubelet-skew:
	$(MAKE) --no-print-directory e2e-kubelet KUBELET_MODULE=tools/kubelet-1.34

# Issue #22's features through the stock kubelet and crictl (not in CI,
# not part of e2e-kubelet): an image volume read by a static pod; a static
# pod with runtimeClassName on the external runc handler, the RuntimeClass
# read from a real etcd + kube-apiserver on loopback (a standalone kubelet
# crashes on runtimeClassName: kubernetes/kubernetes#125561, pinned by a
# check); a static pod given a CDI device by the test's device plugin; a
# pod on the runc handler and a container with CDI_devices through crictl.
# The API server and etcd are the kind tools' (built once by
# tools/kind/build-bins.sh, cached). Last line:
# "kubelet features: N passed, N failed".
KIND_K8S_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" && $$2 ~ /^v/ {print $$2; exit}' tools/kind/go.mod)
KIND_ETCD_VERSION := $(shell awk '$$1 == "go.etcd.io/etcd/server/v3" && $$2 ~ /^v/ {print $$2; exit}' tools/kind/etcd/go.mod)
e2e-kubelet-features: $(KUBELET)
	KIND_CACHE=$(KUBELET_CACHE) GO=$(GO) tools/kind/build-bins.sh kube-apiserver etcd >/dev/null
	PEAPOD_KUBELET=$(KUBELET) \
	PEAPOD_KUBE_APISERVER=$(KUBELET_CACHE)/kubernetes-$(KIND_K8S_VERSION)/kube-apiserver \
	PEAPOD_ETCD=$(KUBELET_CACHE)/etcd-$(KIND_ETCD_VERSION)/etcd \
	$(GO) test -tags "$(TAGS)" -count=1 -timeout 10m -v -parallel 8 -run '^TestKubeletFeatures$$' ./integration/

# make test-cgroupv2 (with AppArmor on under qemu), then the whole critest
# and kubelet e2e (kubelet 1.37, cgroupDriver systemd, no failCgroupV1
# override) inside the cgroup v2 guest with systemd as PID 1 and peapod on
# the systemd driver (integration/cgroupv2-full.sh): UML with the CNI
# network where it boots, else qemu TCG (CGV2_VM_BACKEND=tcg: AppArmor).
# CGV2_FULL_SUITES picks phases. Heavy (not in CI): see docs/conformance.md
# for its wall times.
test-cgroupv2-full: $(CRITEST_TOOLS)/critest $(KUBELET)
	GO=$(GO) CRITEST_TOOLS=$(CRITEST_TOOLS) KUBELET=$(KUBELET) integration/cgroupv2-full.sh

# Pods on an external OCI runtime handler run by Debian's crun, which
# refuses this hybrid cgroup host, in the cgroup v2 guest (systemd as PID
# 1, systemd driver; UML with the CNI network where it boots): the OCI
# handler integration tests on crun, then TestKubeletFeatures' one
# runtimeClassName check with crun as the handler (kubelet 1.37, etcd +
# kube-apiserver in the guest). integration/oci-handlers-v2.sh; wall
# times in docs/conformance.md.
test-oci-handlers-v2: $(KUBELET)
	KIND_CACHE=$(KUBELET_CACHE) GO=$(GO) tools/kind/build-bins.sh kube-apiserver etcd >/dev/null
	GO=$(GO) KUBELET=$(KUBELET) \
	PEAPOD_KUBE_APISERVER=$(KUBELET_CACHE)/kubernetes-$(KIND_K8S_VERSION)/kube-apiserver \
	PEAPOD_ETCD=$(KUBELET_CACHE)/etcd-$(KIND_ETCD_VERSION)/etcd \
	integration/oci-handlers-v2.sh

# The Kubernetes node e2e suite (integration/e2enode, docs/conformance.md):
# e2e_node.test, the kubelet, the ginkgo CLI and agnhost of one release,
# built offline from the Go module proxy through tools/e2e-node (~15 min
# cold on 2 busy cores, 3.6 GB; cached by version in E2E_NODE_DIR), run on
# a private peapod in private mount and network namespaces with focus
# [NodeConformance], skipping [Flaky], [Slow] and [Serial], with
# E2E_NODE_PROCS ginkgo processes. Last line:
# "e2e-node: N passed, N failed, N skipped"; report in _output/e2e-node/.
# E2E_NODE_FOCUS / E2E_NODE_SKIP override the selection. e2e-node-ci is
# the subset CI runs: exec, logs, probes, security context, OOM, restarts.
# E2E_NODE_RUNTIME=containerd runs the same on containerd 2.x, the
# reference (E2E_NODE_CONTAINERD: its bin dir, from
# ../shared/critest/build-containerd2.sh).
E2E_NODE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2; exit}' tools/e2e-node/go.mod)
E2E_NODE_DIR     ?= $(KUBELET_CACHE)/e2e-node-$(E2E_NODE_VERSION)
E2E_NODE_LDFLAGS := $(foreach v,gitVersion=$(E2E_NODE_VERSION) gitTreeState=clean,-X k8s.io/component-base/version.$(v))
E2E_NODE_REPORT  ?= $(CURDIR)/_output/e2e-node
E2E_NODE_PROCS   ?= 4
E2E_NODE_FOCUS   ?=
E2E_NODE_SKIP    ?=
E2E_NODE_RUNTIME ?= peapod
# Fewer passed specs than this fails the run (empty: no floor).
E2E_NODE_MIN_PASSED ?=
# The CI subset: exec and logs (Pods, Kubelet), probes and restarts
# (Probing container, Container Runtime), security context, lifecycle
# hooks, and the OOM killer (a [Serial] spec: ginkgo runs it alone at the end).
E2E_NODE_CI_FOCUS := (Container Runtime|Container Lifecycle Hook|Probing container|Security Context|PrivilegedPod|OOMKiller|Kubelet when scheduling|remote command execution|retrieving logs).*\[NodeConformance\]
# Skipped, as they cannot pass in this harness (docs/conformance.md):
# PrivilegedPod's spec adds a dummy link (no dummy driver in this kernel);
# the OOM killer specs look the kubelet up as a systemd unit (`systemctl
# list-units *kubelet*`), and the private-registry pull needs upstream's
# registry. OOM kills stay covered by make e2e-kubelet and oom_test.go.
E2E_NODE_CI_SKIP  := \[Flaky\]|\[Slow\]|\[Disruptive\]|PrivilegedPod should enable privileged commands|OOMKiller|should be able to pull from private registry with secret

$(E2E_NODE_DIR)/e2e_node.test:
	mkdir -p $(E2E_NODE_DIR)
	cd tools/e2e-node && $(GO) test -c -ldflags "$(E2E_NODE_LDFLAGS)" -o $@.tmp k8s.io/kubernetes/test/e2e_node
	mv $@.tmp $@

# The suite runs the kubelet found next to e2e_node.test: the one of the
# same release, reused from KUBELET_CACHE when make kubelet built it.
$(E2E_NODE_DIR)/kubelet:
	mkdir -p $(E2E_NODE_DIR)
	if [ -x $(KUBELET_CACHE)/kubelet-$(E2E_NODE_VERSION) ]; then cp $(KUBELET_CACHE)/kubelet-$(E2E_NODE_VERSION) $@.tmp; \
	else cd tools/e2e-node && $(GO) build -ldflags "$(E2E_NODE_LDFLAGS)" -o $@.tmp k8s.io/kubernetes/cmd/kubelet; fi
	mv $@.tmp $@

$(E2E_NODE_DIR)/ginkgo:
	mkdir -p $(E2E_NODE_DIR)
	cd tools/e2e-node && CGO_ENABLED=0 $(GO) build -o $@.tmp github.com/onsi/ginkgo/v2/ginkgo
	mv $@.tmp $@

$(E2E_NODE_DIR)/agnhost:
	mkdir -p $(E2E_NODE_DIR)
	cd tools/e2e-node && CGO_ENABLED=0 $(GO) build -o $@.tmp k8s.io/kubernetes/test/images/agnhost
	mv $@.tmp $@

# The pause image's binary: upstream's pause.c (exits on SIGTERM, as the
# specs that stop a pause container expect), static as upstream's.
$(E2E_NODE_DIR)/pause:
	mkdir -p $(E2E_NODE_DIR)
	cd tools/e2e-node && gcc -O2 -static -o $@.tmp "$$($(GO) list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
	mv $@.tmp $@

# agnhost's TLS pair (its image has them at /: the https hook specs'
# handler serves TLS with them).
$(E2E_NODE_DIR)/localhost.crt $(E2E_NODE_DIR)/localhost.key:
	mkdir -p $(E2E_NODE_DIR)
	cd tools/e2e-node && cp "$$($(GO) list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images/agnhost/porter/$(notdir $@)" $@.tmp
	mv $@.tmp $@

e2e-node-tools: $(E2E_NODE_DIR)/e2e_node.test $(E2E_NODE_DIR)/kubelet $(E2E_NODE_DIR)/ginkgo $(E2E_NODE_DIR)/agnhost $(E2E_NODE_DIR)/pause \
	$(E2E_NODE_DIR)/localhost.crt $(E2E_NODE_DIR)/localhost.key

e2e-node: build e2e-node-tools
	@rm -rf $(E2E_NODE_REPORT) && mkdir -p $(dir $(E2E_NODE_REPORT))
	E2E_NODE_DIR=$(E2E_NODE_DIR) PEAPOD_BIN=$(CURDIR)/$(BIN) E2E_NODE_REPORT_DIR=$(E2E_NODE_REPORT) E2E_NODE_PROCS=$(E2E_NODE_PROCS) \
		E2E_NODE_FOCUS='$(E2E_NODE_FOCUS)' E2E_NODE_SKIP='$(E2E_NODE_SKIP)' E2E_NODE_RUNTIME=$(E2E_NODE_RUNTIME) E2E_NODE_MIN_PASSED=$(E2E_NODE_MIN_PASSED) \
		$(GO) test -tags "$(TAGS)" -count=1 -v -timeout 180m -run '^TestE2ENode$$' ./integration/e2enode/ > $(E2E_NODE_REPORT).log 2>&1; \
		rc=$$?; grep -E '^FAIL: ' $(E2E_NODE_REPORT).log; tail -1 $(E2E_NODE_REPORT)/summary.txt 2>/dev/null || tail -20 $(E2E_NODE_REPORT).log; exit $$rc

e2e-node-ci:
	@$(MAKE) --no-print-directory e2e-node E2E_NODE_REPORT=$(CURDIR)/_output/e2e-node-ci E2E_NODE_FOCUS='$(E2E_NODE_CI_FOCUS)' E2E_NODE_SKIP='$(E2E_NODE_CI_SKIP)' E2E_NODE_MIN_PASSED=65

BENCH_JSON ?= $(CURDIR)/_output/bench/performance.json
bench: $(CRITEST_TOOLS)/critest
	mkdir -p $(dir $(BENCH_JSON))
	CRITEST=$(CURDIR)/$(CRITEST_TOOLS)/critest PEAPOD_BENCH_JSON=$(BENCH_JSON) \
		PEAPOD_BENCH_COMMAND="$(if $(BENCH_QUICK),BENCH_QUICK=$(BENCH_QUICK) )make bench" \
		$(GO) test -tags "$(TAGS)" -run '^$$' -bench '^BenchmarkPerformance$$' \
		-benchtime 1x -timeout 60m ./integration/bench/
	$(GO) run ./integration/bench/perfdoc -json $(BENCH_JSON) -doc docs/performance.md

bench-all: $(CRITEST_TOOLS)/critest
	CRITEST=$(CURDIR)/$(CRITEST_TOOLS)/critest $(GO) test -tags "$(TAGS)" -run '^$$' -bench . -benchtime 1x -timeout 90m ./integration/bench/

# Fuzz targets (go test -fuzz), FUZZTIME each. Seeds are committed under
# */testdata/fuzz; a crash the fuzzer finds is written there as well:
# commit it and it runs as a regression test in `make unit`.
FUZZTIME  ?= 30s
fuzz:
	$(GO) test -tags "$(TAGS)" -run '^$$' -fuzz '^FuzzBuildSpec$$' -fuzztime $(FUZZTIME) ./sandbox/
	$(GO) test -tags "$(TAGS)" -run '^$$' -fuzz '^FuzzPathResolution$$' -fuzztime $(FUZZTIME) ./sandbox/
	$(GO) test -tags "$(TAGS)" -run '^$$' -fuzz '^FuzzValidateRequest$$' -fuzztime $(FUZZTIME) ./cri/validate/

clean:
	rm -rf bin $(HELPERS)

# A kind cluster named "peapod" whose node runs peapod (README, "kind"), on
# Debian's podman, built offline: tools/kind/build-bins.sh builds kubeadm,
# kubectl, kubelet, the control-plane components, etcd, CoreDNS and kind
# from the module proxy (tools/kind/go.mod and its etcd/, coredns/
# modules), cached by version in KIND_CACHE; tools/kind/node-image.sh
# builds the node image (debootstrap'ed Debian, kind's entrypoint and
# units, peapod, the control-plane images imported with `peapod image
# import`). `make kind` waits until the node is Ready and prints the
# kubeconfig path; `make e2e-kind` runs integration/kind against it
# (last line "e2e-kind: N passed, N failed"); `make kind-down` removes the
# cluster, its network and volumes, netavark's iptables rules for it, the
# node image and /lib/modules if make kind made it, and fails if anything
# is left. Root.
KIND_CACHE ?= /var/cache/peapod-test
KIND_K8S_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2; exit}' tools/kind/go.mod)
.PHONY: kind kind-down e2e-kind
kind: build
	KIND_CACHE=$(KIND_CACHE) tools/kind/kind.sh up

kind-down:
	KIND_CACHE=$(KIND_CACHE) tools/kind/kind.sh down

e2e-kind:
	@mkdir -p _output
	CONTAINERS_CONF=$(CURDIR)/contrib/kind/containers.conf KUBECTL=$(KIND_CACHE)/kubernetes-$(KIND_K8S_VERSION)/kubectl \
		$(GO) test -tags "$(TAGS)" -count=1 -v -timeout 30m -run '^TestKind$$' ./integration/kind/ > _output/e2e-kind.log 2>&1; \
		rc=$$?; grep -E -e '--- (PASS|FAIL|SKIP)' _output/e2e-kind.log; \
		grep -q '^e2e-kind: ' _output/e2e-kind.log || { tail -30 _output/e2e-kind.log; rc=1; }; \
		grep '^e2e-kind: ' _output/e2e-kind.log; exit $$rc

# Node scale (integration/bench/scale_bench_test.go, issue 21): 20,000
# exited containers (list latency and bytes, unary and Stream*) and 500
# pods (memory, PLEG-like poll CPU, RunPodSandbox p99; peapod on its own
# bridge and, as peapod-cni, on containerd's CNI conflist) on peapod and on
# containerd 2.4.2 (SCALE_CONTAINERD2, built by
# ../shared/critest/build-containerd2.sh). Smaller: SCALE_EXITED=2000
# SCALE_PODS=50; one runtime: SCALE_RUNTIMES=peapod; one part:
# SCALE_BENCH=exited (or pods). About 1.5-2 h at full size on 2 idle cores.
SCALE_BENCH ?= .
bench-scale:
	PEAPOD_BENCH_SCALE=1 $(GO) test -tags "$(TAGS)" -run '^$$' -bench '^BenchmarkScale$$/$(SCALE_BENCH)' \
		-benchtime 1x -timeout 240m ./integration/bench/
