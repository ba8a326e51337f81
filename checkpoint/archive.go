package checkpoint

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The archive's entries, as CRI-O and containerd write them and
// checkpointctl reads them, so a checkpoint from peapod can be inspected
// (checkpointctl show) and restored by either.
const (
	ConfigDumpFile   = "config.dump"     // Config as JSON
	SpecDumpFile     = "spec.dump"       // the container's OCI runtime spec
	ImagesDirectory  = "checkpoint"      // CRIU's images
	RootfsDiffFile   = "rootfs-diff.tar" // files the container wrote or changed
	DeletedFilesFile = "deleted.files"   // JSON list of image files it removed
)

// Config is config.dump: checkpointctl's metadata.ContainerConfig.
type Config struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	RootfsImage     string    `json:"rootfsImage,omitempty"`
	RootfsImageRef  string    `json:"rootfsImageRef,omitempty"`
	RootfsImageName string    `json:"rootfsImageName,omitempty"`
	OCIRuntime      string    `json:"runtime,omitempty"`
	CreatedTime     time.Time `json:"createdTime"`
	CheckpointedAt  time.Time `json:"checkpointedTime"`
	RestoredAt      time.Time `json:"restoredTime"`
	Restored        bool      `json:"restored"`
}

// Contents is what goes into one container's archive.
type Contents struct {
	Config Config
	Spec   []byte // config.json of the container's bundle
	// Images is the directory CRIU dumped into.
	Images string
	// Upper is the overlay upper directory of the container's rootfs:
	// its files make rootfs-diff.tar, its whiteouts deleted.files.
	Upper string
}

// WriteArchive writes the uncompressed tar the kubelet asked for at
// location, readable by root only (it holds the processes' memory), whole
// or not at all: a temporary file beside it, synced, then renamed.
func WriteArchive(location string, c Contents) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(location), "."+filepath.Base(location)+".tmp-")
	if err != nil {
		return fmt.Errorf("create checkpoint archive: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	diff, deleted, err := rootfsDiff(c.Upper, filepath.Dir(location))
	if err != nil {
		return err
	}
	defer os.Remove(diff)

	tw := tar.NewWriter(tmp)
	cfg, err := json.Marshal(c.Config)
	if err != nil {
		return err
	}
	del, err := json.Marshal(deleted)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{ConfigDumpFile, cfg}, {SpecDumpFile, c.Spec}, {DeletedFilesFile, del}} {
		if err := addBytes(tw, f.name, f.data); err != nil {
			return err
		}
	}
	if err := addFile(tw, RootfsDiffFile, diff); err != nil {
		return err
	}
	if err := addTree(tw, c.Images, ImagesDirectory); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint archive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	if err := os.Rename(tmp.Name(), location); err != nil {
		return fmt.Errorf("checkpoint archive: %w", err)
	}
	return nil
}

func addBytes(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	return nil
}

func addFile(tw *tar.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("checkpoint archive %s: %w", name, err)
	}
	return nil
}

// addTree adds dir's entries under prefix, keeping their modes, owners and
// link targets (a rootfs diff needs all three); sockets and the like are
// skipped, as CRI-O's archiver does.
func addTree(tw *tar.Writer, dir, prefix string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("checkpoint archive: %w", err)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join(prefix, rel))
		if rel == "." {
			if prefix == "" {
				return nil
			}
			name = prefix
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("checkpoint archive: %w", err)
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return fmt.Errorf("checkpoint archive: %w", err)
			}
		}
		if !fi.Mode().IsRegular() && !fi.IsDir() && link == "" {
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("checkpoint archive %s: %w", name, err)
		}
		hdr.Name = name
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("checkpoint archive %s: %w", name, err)
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("checkpoint archive: %w", err)
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("checkpoint archive %s: %w", name, err)
			}
		}
		return nil
	})
}

// rootfsDiff writes the upper directory's files, but not its whiteouts,
// into a temporary tar in tmpDir, and returns it with the whiteouts' paths
// (overlayfs marks a removed file with a 0:0 character device). "" upper:
// an empty diff.
func rootfsDiff(upper, tmpDir string) (path string, deleted []string, err error) {
	f, err := os.CreateTemp(tmpDir, ".rootfs-diff-")
	if err != nil {
		return "", nil, fmt.Errorf("rootfs diff: %w", err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	deleted = []string{}
	tw := tar.NewWriter(f)
	if upper != "" {
		err = filepath.WalkDir(upper, func(p string, d fs.DirEntry, werr error) error {
			if werr != nil {
				return werr
			}
			if d.Type()&fs.ModeCharDevice != 0 {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err == nil && st.Rdev == 0 {
					rel, _ := filepath.Rel(upper, p)
					deleted = append(deleted, "/"+filepath.ToSlash(rel))
				}
			}
			return nil
		})
		if err != nil {
			return "", nil, fmt.Errorf("rootfs diff of %s: %w", upper, err)
		}
		if err = addTree(tw, upper, ""); err != nil {
			return "", nil, err
		}
	}
	if err = tw.Close(); err != nil {
		return "", nil, fmt.Errorf("rootfs diff: %w", err)
	}
	return f.Name(), deleted, nil
}

// UpperDir finds the overlay upper directory of the mount at rootfs in
// /proc/self/mountinfo; ("", nil) when rootfs is not an overlay mount.
func UpperDir(rootfs string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	upper := ""
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || f[4] != rootfs {
			continue
		}
		g := strings.Fields(post)
		if len(g) < 3 || g[0] != "overlay" {
			upper = "" // the last mount at rootfs is the visible one
			continue
		}
		upper = ""
		for _, opt := range strings.Split(g[2], ",") {
			if v, ok := strings.CutPrefix(opt, "upperdir="); ok {
				upper = v
			}
		}
	}
	if upper == "" {
		return "", nil
	}
	if _, err := os.Stat(upper); err != nil {
		return "", errors.Join(fmt.Errorf("upper directory of %s", rootfs), err)
	}
	return upper, nil
}
