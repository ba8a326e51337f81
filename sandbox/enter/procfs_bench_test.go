package enter

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkAppArmorProcfs is what an exec with an AppArmor profile pays for
// the procfs it writes its attribute through: the host's /proc opened
// O_PATH (before session 14) against the private procfs the exec process
// mounts (enter.c's open_private_proc), each with the attribute's open and
// every close. Execs without a profile pay neither.
func BenchmarkAppArmorProcfs(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	attr := func(b *testing.B, dir int) {
		fd, err := unix.Openat(dir, "thread-self/attr/exec", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
		unix.Close(dir)
	}
	b.Run("host", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dir, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			attr(b, dir)
		}
	})
	b.Run("private", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			fs, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.FsconfigSetString(fs, "subset", "pid"); err != nil {
				b.Fatal(err)
			}
			if err := unix.FsconfigSetString(fs, "hidepid", "ptraceable"); err != nil {
				b.Fatal(err)
			}
			if err := unix.FsconfigCreate(fs); err != nil {
				b.Fatal(err)
			}
			dir, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(fs)
			attr(b, dir)
		}
	})
}
