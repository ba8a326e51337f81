// Command perfdoc writes the results section of docs/performance.md from
// the JSON that `make bench` (BenchmarkPerformance) writes:
//
//	go run ./integration/bench/perfdoc -json _output/bench/performance.json -doc docs/performance.md
//
// Only the text between perfresult's markers changes; the method sections
// around it are prose kept by hand.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/peapod-cri/peapod/integration/bench/perfresult"
)

func main() {
	jsonPath := flag.String("json", "_output/bench/performance.json", "the run's JSON (make bench)")
	docPath := flag.String("doc", "docs/performance.md", "the doc to update in place")
	print := flag.Bool("print", false, "print the section instead of writing the doc")
	flag.Parse()
	if err := run(*jsonPath, *docPath, *print); err != nil {
		fmt.Fprintln(os.Stderr, "perfdoc:", err)
		os.Exit(1)
	}
}

func run(jsonPath, docPath string, print bool) error {
	r, err := perfresult.Read(jsonPath)
	if err != nil {
		return err
	}
	section := r.Markdown()
	if print {
		fmt.Print(section)
		return nil
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	out, err := perfresult.Splice(string(doc), section)
	if err != nil {
		return fmt.Errorf("%s: %w", docPath, err)
	}
	tmp := docPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, docPath); err != nil {
		return err
	}
	fmt.Printf("perfdoc: %s updated from %s (commit %s, %s)\n", docPath, jsonPath, r.Commit, r.Date)
	return nil
}
