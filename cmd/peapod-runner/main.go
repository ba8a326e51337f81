// Command peapod-runner is peapod's container runner on its own (package
// sandbox/runner): what a pod's keeper executes to start a container, and
// libcontainer's container init ("peapod-runner init"). It links
// libcontainer and nothing of the daemon, so it starts in a fraction of
// the peapod binary's time; the daemon uses it when it is installed beside
// the peapod binary, and runs the same code from its own binary otherwise.
// It is also the daemon's exec helper ("peapod-runner exec-enter", package
// sandbox/enter), C that runs before the Go runtime starts.
package main

import (
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // joins namespaces in "peapod-runner init"

	_ "github.com/peapod-cri/peapod/sandbox/enter" // the fast exec helper, "peapod-runner exec-enter", runs in a C constructor
	"github.com/peapod-cri/peapod/sandbox/runner"
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// libcontainer's container init, after nsenter's constructor ran.
		libcontainer.Init()
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == runner.Command {
		os.Exit(runner.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == runner.ExternalCommand {
		os.Exit(runner.ExternalMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == runner.SeccompCommand {
		os.Exit(runner.SeccompMain())
	}
	fmt.Fprintln(os.Stderr, "peapod-runner is started by peapod's pod keepers, not by hand")
	os.Exit(2)
}
