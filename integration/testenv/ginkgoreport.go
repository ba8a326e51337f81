package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// GinkgoSpec is one spec of a ginkgo JSON report: its full name (the
// container texts and the leaf text, space-joined) and its failure or skip
// message with white space folded.
type GinkgoSpec struct{ Name, Message string }

// GinkgoResults are a report's specs by outcome, each list sorted by name.
type GinkgoResults struct{ Passed, Failed, Skipped []GinkgoSpec }

// ReadGinkgoReport counts the specs of ginkgo's JSON report (--json-report)
// as the suites' own summaries do. Only It nodes count. Specs that the
// focus or skip filtered out are skipped without a message and are not
// counted; specs that skip themselves at run time say why and are. Every
// state other than passed, skipped and pending (failed, panicked,
// timedout, interrupted, aborted) is a failure. Messages longer than
// maxMessage bytes are cut there. A report in which no spec ran is an
// error: a suite that ran nothing must not look green.
func ReadGinkgoReport(path string, maxMessage int) (GinkgoResults, error) {
	var res GinkgoResults
	data, err := os.ReadFile(path)
	if err != nil {
		return res, fmt.Errorf("ginkgo report: %w", err)
	}
	var suites []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeText            string
			LeafNodeType            string
			State                   string
			Failure                 struct{ Message string }
		}
	}
	if err := json.Unmarshal(data, &suites); err != nil {
		return res, fmt.Errorf("ginkgo report %s: %w", path, err)
	}
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" {
				continue
			}
			msg := strings.Join(strings.Fields(r.Failure.Message), " ")
			if len(msg) > maxMessage {
				msg = msg[:maxMessage] + "..."
			}
			sp := GinkgoSpec{strings.Join(append(r.ContainerHierarchyTexts, r.LeafNodeText), " "), msg}
			switch r.State {
			case "passed":
				res.Passed = append(res.Passed, sp)
			case "skipped", "pending":
				if msg != "" {
					res.Skipped = append(res.Skipped, sp)
				}
			default:
				res.Failed = append(res.Failed, sp)
			}
		}
	}
	for _, l := range [][]GinkgoSpec{res.Passed, res.Failed, res.Skipped} {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	if len(res.Passed)+len(res.Failed) == 0 {
		return res, fmt.Errorf("ginkgo report %s: %w", path, ErrNoSpecRan)
	}
	return res, nil
}

// ErrNoSpecRan is ReadGinkgoReport's answer to a report without a passed
// or failed spec.
var ErrNoSpecRan = errors.New("no spec ran")
