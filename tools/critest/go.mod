module github.com/peapod-cri/peapod/tools/critest

go 1.26.6

tool (
	github.com/onsi/ginkgo/v2/ginkgo
	sigs.k8s.io/cri-tools/cmd/critest
)

require (
	github.com/Masterminds/semver/v3 v3.4.0 // indirect
	github.com/go-task/slim-sprig/v3 v3.0.0 // indirect
	github.com/google/pprof v0.0.0-20260402051712-545e8a4df936 // indirect
	github.com/onsi/ginkgo/v2 v2.32.1 // indirect
	github.com/rogpeppe/go-internal v1.14.1 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/mod v0.38.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/tools v0.48.0 // indirect
	sigs.k8s.io/cri-tools v1.37.0 // indirect
)
