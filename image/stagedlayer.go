package image

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/archive"
)

// tarDiffer unpacks one uncompressed layer tar into the staging directory
// storage's overlay driver gives it (storage.PrepareStagedLayer), so that
// the layers of one image are unpacked at the same time, each in this
// process, and committed in order afterwards by a rename
// (storage.ApplyStagedLayer). storage's own PutLayer unpacks in a
// re-executed child, one layer after the other, as a layer can only be
// created on top of its parent.
//
// The files are written by storage's archive.Unpack with the options the
// driver passes (overlay whiteouts and opaque directories), as the driver's
// own ApplyDiff writes them, but in this process.
type tarDiffer struct {
	r io.Reader // the uncompressed layer; read to EOF on success (at most maxLayerTrailer past the tar's end)
}

// rootUnset is the mode the staging root has while the tar unpacks: a tar
// entry for the root directory replaces it (archive.Unpack always applies
// an entry's mode), so a root still at rootUnset had none, and keeps the
// mode the driver gave it, or its parent layer's (ApplyStagedLayer).
const rootUnset = 0

func (d *tarDiffer) ApplyDiff(dest string, opts *archive.TarOptions, _ *graphdriver.DifferOptions) (graphdriver.DriverWithDifferOutput, error) {
	var out graphdriver.DriverWithDifferOutput
	st, err := os.Stat(dest)
	if err != nil {
		return out, err
	}
	if err := os.Chmod(dest, rootUnset); err != nil {
		return out, err
	}
	// Unpack resolves every entry's parent inside dest (securejoin) and
	// replaces, never follows, an existing last component: a layer's
	// symlinks cannot lead it out. Nothing else writes to a staging
	// directory while it unpacks. (The driver's own ApplyDiff also chroots
	// a child process; a chroot here would need a thread of its own that
	// dies after, and with it any child a PR_SET_PDEATHSIG tied to it.)
	err = archive.Unpack(d.r, dest, opts)
	if err == nil {
		// What follows the tar's end (zero blocks, padding) is part of
		// the digested stream; more than padding is not a layer, and is
		// not read on (a registry could send it for ever).
		var n int64
		n, err = io.Copy(io.Discard, io.LimitReader(d.r, maxLayerTrailer+1))
		if err == nil && n > maxLayerTrailer {
			err = fmt.Errorf("more than %d bytes after the end of the tar: %w", maxLayerTrailer, ErrCorrupt)
		}
	}
	if err != nil {
		return out, fmt.Errorf("unpack layer: %w", err)
	}
	after, err := os.Stat(dest)
	if err != nil {
		return out, err
	}
	modeBits := os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky
	if after.Mode()&modeBits == rootUnset {
		if err := os.Chmod(dest, st.Mode()&modeBits); err != nil {
			return out, err
		}
	} else {
		m := after.Mode() & modeBits
		out.RootDirMode = &m
	}
	out.UIDs, out.GIDs, err = owners(dest)
	return out, err
}

func (d *tarDiffer) Close() error { return nil }

// owners lists the user and group IDs owning files under dir, as storage
// records them for a layer.
func owners(dir string) (uids, gids []uint32, err error) {
	us, gs := map[uint32]bool{}, map[uint32]bool{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			us[st.Uid], gs[st.Gid] = true, true
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list owners in layer: %w", err)
	}
	for id := range us {
		uids = append(uids, id)
	}
	for id := range gs {
		gids = append(gids, id)
	}
	slices.Sort(uids)
	slices.Sort(gids)
	return uids, gids, nil
}
