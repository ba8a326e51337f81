package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestReadGinkgoReport(t *testing.T) {
	res, err := ReadGinkgoReport(filepath.Join("testdata", "ginkgo-report.json"), 10)
	if err != nil {
		t.Fatal(err)
	}
	want := GinkgoResults{
		// Sorted by name; the BeforeSuite node is not a spec.
		Passed: []GinkgoSpec{{"[k8s.io] Image pulls an image", ""}, {"[k8s.io] Pod runtime runs a pod", ""}},
		// White space folded, cut at 10 bytes; panicked counts as failed.
		Failed: []GinkgoSpec{{"[k8s.io] Exec times out", "0123456789..."}, {"[k8s.io] Pod dies", "boom: nil ..."}},
		// Filtered-out and pending specs without a message are not counted.
		Skipped: []GinkgoSpec{{"[k8s.io] AppArmor loads a profile", "no kernel"}},
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("ReadGinkgoReport:\n got %+v\nwant %+v", res, want)
	}
}

func TestReadGinkgoReportNothingRan(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	report := `[{"SpecReports": [{"LeafNodeText": "filtered", "LeafNodeType": "It", "State": "skipped"}]}]`
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadGinkgoReport(path, 300); !errors.Is(err, ErrNoSpecRan) {
		t.Errorf("ReadGinkgoReport of a report where nothing ran: %v, want ErrNoSpecRan", err)
	}
	if _, err := ReadGinkgoReport(filepath.Join(t.TempDir(), "missing.json"), 300); err == nil {
		t.Error("ReadGinkgoReport of a missing file: no error")
	}
}
