# peapod — see README.md. Needs Go (go.mod's version) and gcc (cgo).
GO        ?= go
TAGS      := $(shell cat build-tags.txt)
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/peapod
# Flags for `make run`, e.g. make run ARGS="--log-level debug".
ARGS      ?=

.PHONY: all build run test unit integration vet bench clean

all: build

build:
	CGO_ENABLED=1 $(GO) build -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/peapod

# Starts peapod in the foreground with its embedded defaults (as root).
run: build
	./$(BIN) $(ARGS)

vet:
	$(GO) vet -tags "$(TAGS)" ./...

# Unit tests only: no root, no network, no kernel containers.
unit:
	$(GO) test -tags "$(TAGS)" -count=1 ./config/... ./cri/... ./cgroups/... ./sandbox/...

# Everything, as root: unit tests, then the integration tests against a
# real daemon, registry, crictl and kernel containers.
test: vet
	$(GO) test -tags "$(TAGS)" -count=1 -timeout 30m ./...

integration:
	$(GO) test -tags "$(TAGS)" -count=1 -timeout 30m -v ./integration/...

bench:
	$(GO) test -tags "$(TAGS)" -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
