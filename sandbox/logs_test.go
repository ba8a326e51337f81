package sandbox

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCopyStreamWritesCRIFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "0.log")
	l, err := openContainerLog(path)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxLogLine+10)
	copyStream(l, "stderr", strings.NewReader("hello\n\nworld\n"+long+"\ntail"))
	l.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := []struct{ tag, content string }{
		{"F", "hello"}, {"F", ""}, {"F", "world"},
		{"P", long[:maxLogLine]}, {"F", long[maxLogLine:]}, {"F", "tail"},
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), data)
	}
	re := regexp.MustCompile(`^(\S+) stderr ([FP]) (.*)$`)
	for i, line := range lines {
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d %q is not in CRI format", i, line)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Errorf("line %d timestamp: %v", i, err)
		}
		if m[2] != want[i].tag || m[3] != want[i].content {
			t.Errorf("line %d = %s %q, want %s %q", i, m[2], shorten(m[3]), want[i].tag, shorten(want[i].content))
		}
	}
}

func shorten(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

func TestNoLogPathDiscards(t *testing.T) {
	l, err := openContainerLog("")
	if err != nil {
		t.Fatal(err)
	}
	copyStream(l, "stdout", strings.NewReader("dropped\n"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
