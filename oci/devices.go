package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// setDevices adds the kubelet's devices (device plugins, hostPath char
// devices) to the container and lets the device cgroup allow them. A
// privileged container gets every device of the host, as kubelet expects.
func setDevices(spec *specs.Spec, devs []*runtimeapi.Device, privileged bool) error {
	if privileged {
		host, err := hostDevices()
		if err != nil {
			return err
		}
		spec.Linux.Devices = appendDevices(spec.Linux.Devices, host)
	}
	for _, d := range devs {
		found, err := devicesAt(d.GetHostPath(), d.GetContainerPath())
		if err != nil {
			return fmt.Errorf("device %s: %v: %w", d.GetHostPath(), err, ErrInvalidArgument)
		}
		spec.Linux.Devices = appendDevices(spec.Linux.Devices, found)
		if privileged {
			continue // the cgroup allows everything already
		}
		for _, dev := range found {
			major, minor := dev.Major, dev.Minor
			spec.Linux.Resources.Devices = append(spec.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
				Allow: true, Type: dev.Type, Major: &major, Minor: &minor, Access: d.GetPermissions(),
			})
		}
	}
	return nil
}

// appendDevices adds devs, a later device replacing an earlier one at the
// same path.
func appendDevices(list, devs []specs.LinuxDevice) []specs.LinuxDevice {
	for _, d := range devs {
		replaced := false
		for i := range list {
			if list[i].Path == d.Path {
				list[i], replaced = d, true
			}
		}
		if !replaced {
			list = append(list, d)
		}
	}
	return list
}

// devicesAt reads the device node at host (after symlinks, as with
// /dev/disk/by-id/...), or every device node below it when it is a
// directory, placed at the same relative path below ctr.
func devicesAt(host, ctr string) ([]specs.LinuxDevice, error) {
	resolved, err := filepath.EvalSymlinks(host)
	if err != nil {
		return nil, err
	}
	// Device nodes live in /dev; anything else (a directory such as "/"
	// to walk, a regular file) is a mistake or an attack.
	if !strings.HasPrefix(resolved, "/dev/") {
		return nil, fmt.Errorf("%s is not under /dev", resolved)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		d, err := deviceFromPath(resolved, ctr)
		if err != nil {
			return nil, err
		}
		return []specs.LinuxDevice{d}, nil
	}
	var out []specs.LinuxDevice
	err = filepath.WalkDir(resolved, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(resolved, p)
		d, err := deviceFromPath(p, filepath.Join(ctr, rel))
		if errors.Is(err, errNotDevice) {
			return nil
		}
		if err == nil {
			out = append(out, d)
		}
		return err
	})
	return out, err
}

var errNotDevice = errors.New("not a device node")

func deviceFromPath(host, ctr string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Lstat(host, &st); err != nil {
		return specs.LinuxDevice{}, err
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, fmt.Errorf("%s: %w", host, errNotDevice)
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Path: ctr, Type: typ,
		Major: int64(unix.Major(uint64(st.Rdev))), Minor: int64(unix.Minor(uint64(st.Rdev))),
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}

// hostDevices lists the host's device nodes under /dev, without the
// pseudo-terminals and the console the container gets its own of.
func hostDevices() ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir("/dev", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil // a device that came and went
			}
			return err
		}
		if e.IsDir() {
			switch p {
			case "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/.lxc", "/dev/.udev":
				return filepath.SkipDir
			}
			return nil
		}
		if p == "/dev/console" || p == "/dev/ptmx" || strings.HasPrefix(p, "/dev/.") {
			return nil
		}
		d, err := deviceFromPath(p, p)
		if err == nil {
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host devices: %w", err)
	}
	return out, nil
}
