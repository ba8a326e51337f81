package helperbin

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/sandbox/seal"
)

// TestLoad: an embedded helper runs from its Path (/proc/<pid>/fd/N, which
// another process of the host can execute too), and a second Load keeps the
// first memfd, which keepers may already run from.
func TestLoad(t *testing.T) {
	if Path(Runner) != "" || File(Pause) != nil {
		t.Fatal("a helper is there before any Load")
	}
	data, err := os.ReadFile("/bin/echo")
	if err != nil {
		t.Skip("no /bin/echo:", err)
	}
	if err := Load(Runner, string(data)); err != nil {
		t.Fatal(err)
	}
	first := Path(Runner)
	out, err := exec.Command(first, "ran").Output()
	if err != nil || string(out) != "ran\n" {
		t.Fatalf("run %s: %q, %v", first, out, err)
	}
	if err := Load(Runner, "other"); err != nil || Path(Runner) != first {
		t.Fatalf("a second Load: %v, path %s, want %s", err, Path(Runner), first)
	}
	if Path(Pause) != "" {
		t.Errorf("Pause has a path without a Load: %s", Path(Pause))
	}
}

// TestAdopt: a restarted daemon takes the memfd its keepers run from (the
// same contents, sealed) instead of making another copy, and makes its own
// when the running one holds other contents.
func TestAdopt(t *testing.T) {
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep:", err)
	}
	const name = "peapod-test-adopt"
	if err := Load(name, string(data)); err != nil {
		t.Fatal(err)
	}
	old := File(name)
	// A "keeper" of the daemon before the restart.
	cmd := exec.Command(Path(name), "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var before unix.Stat_t
	if err := unix.Fstat(int(old.Fd()), &before); err != nil {
		t.Fatal(err)
	}
	// The restart: the old daemon's memfd is gone but for the keeper.
	mu.Lock()
	delete(files, name)
	mu.Unlock()
	old.Close()

	if f := adopt(name, string(data[:len(data)-1])+"x"); f != nil {
		f.Close()
		t.Fatal("adopted a memfd of other contents")
	}
	// The same contents, but its exec bits not sealed: its maker could
	// make it unexecutable after the adoption.
	fd, err := unix.MemfdCreate(name, unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC|unix.MFD_EXEC)
	if err != nil {
		t.Fatal(err)
	}
	loose := os.NewFile(uintptr(fd), name)
	defer loose.Close()
	if _, err := loose.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(loose.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		t.Fatal(err)
	}
	if seal.IsSealed(loose) {
		t.Fatal("a memfd without F_SEAL_EXEC counts as sealed")
	}
	if err := Load(name, string(data)); err != nil {
		t.Fatal(err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(File(name).Fd()), &after); err != nil {
		t.Fatal(err)
	}
	if after.Ino != before.Ino || after.Dev != before.Dev {
		t.Errorf("the restarted daemon made a new memfd (inode %d) instead of the keeper's (%d)", after.Ino, before.Ino)
	}
	if out, err := exec.Command(Path(name), "0").CombinedOutput(); err != nil {
		t.Errorf("run the adopted memfd: %v: %s", err, out)
	}
}
