package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/image"
)

// imageCommand runs `peapod image import [flags] FILE...`: it stores the
// images of OCI layouts (directories or tars) and docker-archives in the
// image store the config names, as `ctr images import` or `podman load`
// do, so a node without a registry (a kind node) gets its images. It works
// with the daemon running or not: the store is shared under
// containers/storage's locks, and the kubelet sees the images at once.
func imageCommand(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "import" {
		return errors.New("usage: peapod image import [--config FILE] [--name REF] FILE...")
	}
	fs := flag.NewFlagSet("peapod image import", flag.ContinueOnError)
	fs.SetOutput(stdout)
	configPath := fs.String("config", "", "the daemon's config file (e.g. /etc/peapod/peapod.toml)")
	name := fs.String("name", "", "name of an archive's only image when the archive gives it none (or only a tag)")
	values := map[string]*string{}
	for _, n := range []string{"root", "state"} {
		values[n] = fs.String(n, "", flagUsage[n]+" (overrides the config file)")
	}
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: peapod image import [--config FILE] [--root DIR] [--state DIR] [--name REF] FILE...")
		fmt.Fprintln(stdout, "FILE: an OCI layout (directory or tar, gzip or not) or a docker-archive tar")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no file to import")
	}
	if *name != "" && fs.NArg() > 1 {
		return errors.New("--name names the image of one file: give one file")
	}
	cfg, err := loadWithFlags(*configPath, fs, values)
	if err != nil {
		return err
	}
	// The daemon makes these at start; an import may come first (a node
	// image is filled before it ever boots).
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.State, 0o711); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer stop()
	store, err := image.Open(image.Config{Root: cfg.Root, ContainerRoot: cfg.ContainerRoot, RunRoot: cfg.State,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("open the image store: %w", err)
	}
	var errs []error
	for _, file := range fs.Args() {
		imgs, err := store.Import(ctx, file, *name)
		for _, img := range imgs {
			fmt.Fprintf(stdout, "imported %s %s\n", strings.Join(img.RepoTags, ","), img.ID)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close the image store: %w", err))
	}
	return errors.Join(errs...)
}
