package selfmem

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestDropStringRefusesAnonymous: DropString drops pages of read-only file
// mappings only; a string built at run time (the heap, anonymous and
// writable) is left as it is, and reads the same after.
func TestDropStringRefusesAnonymous(t *testing.T) {
	data := strings.Repeat("peapod", 4096)
	if err := DropString(data); err == nil {
		t.Fatal("DropString of a heap string succeeded")
	}
	if data != strings.Repeat("peapod", 4096) {
		t.Fatal("DropString changed a heap string")
	}
}

func TestParseMapping(t *testing.T) {
	for _, tc := range []struct {
		line string
		want mapping
		bad  bool
	}{
		{line: "00400000-02c5f000 r--p 00000000 fe:01 1234 /usr/local/bin/peapod",
			want: mapping{start: 0x400000, end: 0x2c5f000, offset: 0, inode: 1234, path: "/usr/local/bin/peapod"}},
		{line: "7f00-8f00 rw-p 00001000 00:00 0",
			want: mapping{start: 0x7f00, end: 0x8f00, writable: true, offset: 0x1000}},
		{line: "1000-2000 r--p 0 fe:01 7 /opt/a b (deleted)",
			want: mapping{start: 0x1000, end: 0x2000, inode: 7, path: "/opt/a b (deleted)"}},
		{line: "1000-2000 r--p", bad: true},
		{line: "xyz-2000 r--p 0 fe:01 7", bad: true},
	} {
		got, err := parseMapping(tc.line)
		if tc.bad != (err != nil) {
			t.Errorf("%q: error %v, want bad=%v", tc.line, err, tc.bad)
			continue
		}
		got.line, tc.want.line = "", ""
		if !tc.bad && got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

// TestWrittenMappingIsPrivate: a read-only file mapping that was written
// before it was protected (as the dynamic loader does to RELRO) counts as
// private, and DropString leaves such mappings alone: dropping them
// would bring back the file's bytes (a daemon built with cgo, its RELRO
// dropped, jumped to address 0 through its reset GOT before this check).
func TestWrittenMappingIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relro")
	if err := os.WriteFile(path, make([]byte, 3*os.Getpagesize()), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), 0, 3*os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	b[os.Getpagesize()] = 'x' // relocated
	if err := unix.Mprotect(b, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	ms, err := mappings()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range ms {
		if m.path == path {
			found = true
			if m.writable || !m.private {
				t.Errorf("the written, protected mapping reads writable=%v private=%v: %s", m.writable, m.private, m.line)
			}
		}
	}
	if !found {
		t.Fatalf("%s is not among the mappings", path)
	}
	if err := DropString(unsafe.String(&b[0], len(b))); err == nil {
		t.Error("DropString dropped pages of a written mapping")
	}
	if b[os.Getpagesize()] != 'x' {
		t.Fatal("the written page lost its contents")
	}
}
