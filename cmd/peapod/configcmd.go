package main

import (
	"fmt"
	"io"

	"github.com/peapod-cri/peapod/config"
)

// configCommand runs `peapod config default` and `peapod config check FILE`.
func configCommand(args []string, stdout io.Writer) error {
	const usage = "usage: peapod config default | peapod config check FILE"
	if len(args) == 0 {
		return fmt.Errorf(usage)
	}
	switch args[0] {
	case "default":
		if len(args) != 1 {
			return fmt.Errorf(usage)
		}
		_, err := io.WriteString(stdout, config.DefaultsText())
		return err
	case "check":
		if len(args) != 2 {
			return fmt.Errorf(usage)
		}
		if err := config.Check(args[1]); err != nil {
			return fmt.Errorf("invalid config:\n%w", err)
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[1])
		return nil
	}
	return fmt.Errorf("unknown config command %q; %s", args[0], usage)
}
