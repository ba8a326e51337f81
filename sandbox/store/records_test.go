package store

import (
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// LoadPods returns the records it can use, and moves aside (quarantine-pods)
// one that does not decode and one whose ID is not its key, instead of
// failing; a saved pod keeps its CRI config through the round trip.
func TestLoadPodsQuarantinesBadRecords(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good := &Pod{ID: strings.Repeat("a", 64), State: PodReady,
		Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web"}}}
	if err := s.SavePod(good); err != nil {
		t.Fatal(err)
	}
	wrongID := *good
	wrongID.ID = strings.Repeat("b", 64)
	rec, _ := encodePod(&wrongID)
	if err := s.Put(Pods, strings.Repeat("c", 64), rec); err != nil {
		t.Fatal(err)
	}
	if err := s.write(&storeWrite{bucket: Pods, id: "garbage", data: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	var logged []string
	pods, err := s.LoadPods(testLogger{&logged})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 1 || pods[0].ID != good.ID || pods[0].Config.GetMetadata().GetName() != "web" {
		t.Fatalf("loaded %+v, want only the good pod with its config", pods)
	}
	var aside int
	s.Each(QuarantineBucket(Pods), func(string, []byte) error { aside++; return nil })
	if aside != 2 || len(logged) != 2 {
		t.Errorf("%d records moved aside, %d logged (%v); want 2", aside, len(logged), logged)
	}
	if again, _ := s.LoadPods(testLogger{&logged}); len(again) != 1 {
		t.Errorf("second load: %d pods", len(again))
	}
}

type testLogger struct{ lines *[]string }

func (l testLogger) Warn(msg string, args ...any)  { *l.lines = append(*l.lines, msg) }
func (l testLogger) Error(msg string, args ...any) { *l.lines = append(*l.lines, msg) }
