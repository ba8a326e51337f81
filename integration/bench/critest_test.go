package bench

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// critestParams is critest --benchmark's parameter file: the sizes of
// ../shared/critest/benchmark-params.yaml (40 pods and containers 2 at a
// time, 20 image pulls), with the images at @REGISTRY@.
//
//go:embed critest_params.yaml.tmpl
var critestParams string

// critestImages are the references critest --benchmark uses.
type critestImages struct {
	container, pull string
	list            []string
}

// pushCritestImages pushes critest's images to reg: the default container
// image (busybox, `sh`), a 1.2 MB single-layer image for the pull
// benchmark (the size of the harness's httpd), and three small distinct
// images for the listing benchmark.
func pushCritestImages(b *testing.B, reg string) critestImages {
	imgs := critestImages{container: reg + "/critest/busybox:1", pull: reg + "/critest/pull:1"}
	testenv.PushImage(b, reg, "critest/busybox:1", testenv.BusyboxRootfs(b), testenv.ImageConfig{Cmd: []string{"sh"}})
	pullImg, err := testenv.RandomImage(1, 1200<<10, 10)
	if err != nil {
		b.Fatal(err)
	}
	testenv.Push(b, imgs.pull, pullImg, "", "")
	for i := 1; i <= 3; i++ {
		img, err := testenv.RandomImage(1, 4<<10, uint64(10+i))
		if err != nil {
			b.Fatal(err)
		}
		ref := fmt.Sprintf("%s/critest/list-%d:latest", reg, i)
		testenv.Push(b, ref, img, "", "")
		imgs.list = append(imgs.list, ref)
	}
	return imgs
}

// critestOps are the rows of critest's results, in the table's order.
var critestOps = []string{
	"pod CreatePod", "pod StatusPod", "pod StopPod", "pod RemovePod",
	"container CreateContainer", "container StartContainer", "container StatusContainer",
	"container StopContainer", "container RemoveContainer",
	"image_lifecycle PullImage", "image_lifecycle StatusImage", "image_lifecycle RemoveImage",
	"image_listing ListImages", "pod+container from scratch",
}

// critestSizes are the samples of one critest --benchmark run.
type critestSizes struct{ pods, containers, images int }

// runCritestBenchmark runs `critest --benchmark` against the CRI socket
// sock with the sizes sz and returns the samples of each operation, named as critest's JSON
// names them ("pod CreatePod", "container StartContainer", ...), plus
// critest's pod + container from scratch ("pod+container from scratch").
func runCritestBenchmark(b *testing.B, critest, sock string, imgs critestImages, sz critestSizes) map[string][]time.Duration {
	dir := b.TempDir()
	reg := strings.SplitN(imgs.container, "/", 2)[0]
	params := strings.NewReplacer("@REGISTRY@", reg, "@PODS@", strconv.Itoa(sz.pods),
		"@CONTAINERS@", strconv.Itoa(sz.containers), "@IMAGES@", strconv.Itoa(sz.images)).Replace(critestParams)
	if err := os.WriteFile(filepath.Join(dir, "params.yaml"), []byte(params), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images.yaml"), fmt.Appendf(nil, "defaultTestContainerImage: %s\nwebServerTestImage: %s\n", imgs.container, imgs.container), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(critest, "--benchmark", "--runtime-endpoint", "unix://"+sock, "--image-endpoint", "unix://"+sock,
		"--benchmarking-params-file", filepath.Join(dir, "params.yaml"), "--benchmarking-output-dir", dir,
		"--test-images-file", filepath.Join(dir, "images.yaml"),
		"--ginkgo.no-color", "--ginkgo.json-report", filepath.Join(dir, "report.json"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		// Reported, not fatal: the other runtimes' rows and the rest of
		// the suite still mean something (the run's notes name it).
		fmt.Printf("critest --benchmark on %s: %v\n%s\n", sock, err, tail(out, 4000))
		critestFailures = append(critestFailures, fmt.Sprintf("%s: %v: %s", sock, err, firstLine(tail(out, 4000), "timed out")))
	}
	res := map[string][]time.Duration{}
	files, _ := filepath.Glob(filepath.Join(dir, "*_benchmark_data.json"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		var r struct {
			OperationsNames []string `json:"operationsNames"`
			Datapoints      []struct {
				OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
			} `json:"datapoints"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		group := strings.TrimSuffix(filepath.Base(f), "_benchmark_data.json")
		for i, op := range r.OperationsNames {
			for _, dp := range r.Datapoints {
				if i < len(dp.OperationsDurationsNs) {
					res[group+" "+op] = append(res[group+" "+op], time.Duration(dp.OperationsDurationsNs[i]))
				}
			}
		}
	}
	if d := fromScratch(filepath.Join(dir, "report.json")); len(d) > 0 {
		res["pod+container from scratch"] = d
	}
	if len(res) == 0 && err == nil {
		b.Fatalf("critest --benchmark on %s wrote no benchmark data:\n%s", sock, tail(out, 4000))
	}
	return res
}

// fromScratch reads the "start-container-benchmark" gmeasure experiment
// (pod + container from scratch) from critest's ginkgo JSON report.
func fromScratch(report string) []time.Duration {
	data, err := os.ReadFile(report)
	if err != nil {
		return nil
	}
	var suites []struct {
		SpecReports []struct {
			ReportEntries []struct {
				Name  string
				Value struct{ AsJSON string }
			}
		}
	}
	if json.Unmarshal(data, &suites) != nil {
		return nil
	}
	var out []time.Duration
	for _, s := range suites {
		for _, spec := range s.SpecReports {
			for _, e := range spec.ReportEntries {
				if e.Name != "start-container-benchmark" {
					continue
				}
				var exp struct {
					Measurements []struct{ Durations []time.Duration }
				}
				if json.Unmarshal([]byte(e.Value.AsJSON), &exp) == nil {
					for _, m := range exp.Measurements {
						out = append(out, m.Durations...)
					}
				}
			}
		}
	}
	return out
}

// critestFailures are the critest runs that failed (socket, error, the
// line saying why).
var critestFailures []string

// firstLine is the first line of out that contains sub, else "".
func firstLine(out []byte, sub string) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
