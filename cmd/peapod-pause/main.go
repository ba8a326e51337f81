// Command peapod-pause is the pod's keeper (pause) on its own: the C of
// package sandbox/pause, which runs from an ELF constructor before the Go
// runtime starts, in a binary that links nothing else and is linked
// statically. One runs per pod, so its private pages are the per-pod
// memory of peapod: without the dynamic loader, libc's relocated data and
// libseccomp (which the peapod binary needs, not the keeper), and with a
// small binary's data instead of the daemon's, a keeper costs about half
// the memory it costs run from the peapod binary (docs/performance.md).
// The daemon starts keepers from it when it is installed beside the
// peapod binary, and from its own binary otherwise.
package main

/*
// Static: no dynamic loader, no relocated libc data per process. The
// keeper calls nothing that needs NSS or dlopen.
#cgo LDFLAGS: -static
*/
import "C"

import (
	"fmt"
	"os"

	_ "github.com/peapod-cri/peapod/sandbox/pause" // the keeper, "peapod-pause pod-pause ...", runs in a C constructor
)

func main() {
	fmt.Fprintln(os.Stderr, "peapod-pause is started by the peapod daemon, one per pod, not by hand")
	os.Exit(2)
}
