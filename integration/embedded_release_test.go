package integration

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestEmbeddedHelpersReleased: once a real daemon has sealed its embedded
// helpers into memfds, their copies in its binary (~10 MB of read-only
// data, read once at start; checked for the runner, the musl keeper being
// too small to tell from fault-around) are neither in its page tables (pagemap's
// present bit, so not in its RSS) nor in the page cache (mincore of the
// binary's file). Where the helpers lie comes from the binary's symbols
// main.embeddedRunner and main.embeddedPause, whose string headers are
// read from the running daemon's memory.
func TestEmbeddedHelpersReleased(t *testing.T) {
	regAddr, _ := testImage(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "peapod")
	if out, err := exec.Command("cp", peapodBinary, bin).CombinedOutput(); err != nil {
		t.Fatalf("copy peapod: %v: %s", err, out)
	}
	// Written back, so its page cache is clean and may be dropped, as a
	// binary installed long before the daemon starts.
	syncFile(t, bin)
	opts := daemonOptions(t, regAddr)
	opts.Binary = bin
	d := &daemon{testenv.NewDaemon(t, opts)}
	d.Start()
	pid := d.Cmd.Process.Pid

	exe, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	syms, err := exe.Symbols()
	if err != nil {
		t.Fatalf("%s has no symbols: %v", bin, err)
	}
	maps := readMaps(t, pid, bin)
	bias := loadBias(t, exe, maps)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	page := uint64(os.Getpagesize())
	for _, name := range []string{"main.embeddedRunner", "main.embeddedPause"} {
		var header [16]byte // a string: data pointer, length
		for _, s := range syms {
			if s.Name == name {
				if _, err := mem.ReadAt(header[:], int64(s.Value+bias)); err != nil {
					t.Fatalf("read %s in the daemon: %v", name, err)
				}
			}
		}
		start, size := binary.LittleEndian.Uint64(header[:8]), binary.LittleEndian.Uint64(header[8:])
		// The runner is ~10 MB, the musl keeper ~90 KiB.
		if size < 16<<10 {
			t.Fatalf("%s: %d bytes at %#x, want a helper (symbol found: %v)", name, size, start, start != 0)
		}
		m := maps.holding(t, start, start+size)
		lo, hi := (start+page-1)&^(page-1), (start+size)&^(page-1)
		pages := int((hi - lo) / page)
		present := presentPages(t, pid, lo, hi)
		cached := cachedPages(t, bin, int64(lo-m.start+m.offset), int(hi-lo))
		t.Logf("%s: %d bytes at %#x (%s): %d of %d pages in the daemon's page tables, %d in the page cache",
			name, size, start, m.line, present, pages, cached)
		// Slack: the kernel reads ahead and maps around (fault-around) a
		// page the daemon faults next to the range, a few dozen pages at
		// most (seen: up to 22), against thousands before the fix.
		const slack = 64
		if pages <= 4*slack {
			// The musl keeper's 22 pages: one fault-around window
			// (64 KiB) next to it can map most of them, and releasing
			// them or not weighs nothing against the runner's 2,500.
			continue
		}
		if present > slack {
			t.Errorf("%s: %d of its %d pages are still resident in the daemon", name, present, pages)
		}
		if cached > slack {
			t.Errorf("%s: %d of its %d pages are still in the page cache", name, cached, pages)
		}
	}
}

func syncFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("sync %s: %v", path, err)
	}
}

// exeMapping is one mapping of the daemon's binary in /proc/PID/maps.
type exeMapping struct {
	start, end, offset uint64
	line               string
}

type exeMappings []exeMapping

// readMaps returns the mappings of path in process pid.
func readMaps(t *testing.T, pid int, path string) exeMappings {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ms exeMappings
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != path {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		var m exeMapping
		var err1, err2, err3 error
		m.start, err1 = strconv.ParseUint(lo, 16, 64)
		m.end, err2 = strconv.ParseUint(hi, 16, 64)
		m.offset, err3 = strconv.ParseUint(fields[2], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("bad maps line %q", sc.Text())
		}
		m.line = sc.Text()
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		t.Fatalf("daemon %d maps nothing of %s", pid, path)
	}
	return ms
}

func (ms exeMappings) holding(t *testing.T, start, end uint64) exeMapping {
	t.Helper()
	for _, m := range ms {
		if m.start <= start && end <= m.end {
			return m
		}
	}
	t.Fatalf("%#x-%#x is in no mapping of the binary: %v", start, end, ms)
	return exeMapping{}
}

// loadBias is where the binary was loaded against its link addresses (0
// for a non-PIE executable).
func loadBias(t *testing.T, exe *elf.File, ms exeMappings) uint64 {
	t.Helper()
	for _, p := range exe.Progs {
		if p.Type == elf.PT_LOAD {
			for _, m := range ms {
				if m.offset == p.Off&^(p.Align-1) {
					return m.start - p.Vaddr&^(p.Align-1)
				}
			}
		}
	}
	t.Fatal("the binary's first PT_LOAD is not mapped")
	return 0
}

// presentPages counts the pages of [lo, hi) that process pid has in its
// page tables (bit 63 of /proc/PID/pagemap).
func presentPages(t *testing.T, pid int, lo, hi uint64) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := uint64(os.Getpagesize())
	buf := make([]byte, (hi-lo)/page*8)
	if _, err := f.ReadAt(buf, int64(lo/page*8)); err != nil {
		t.Fatalf("read pagemap: %v", err)
	}
	n := 0
	for i := 0; i < len(buf); i += 8 {
		if binary.LittleEndian.Uint64(buf[i:])&(1<<63) != 0 {
			n++
		}
	}
	return n
}

// cachedPages counts the pages of path's [off, off+size) in the page cache
// (mincore of a mapping that faults nothing in).
func cachedPages(t *testing.T, path string, off int64, size int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), off, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s at %d: %v", path, off, err)
	}
	defer unix.Munmap(b)
	vec := make([]byte, (size+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}
