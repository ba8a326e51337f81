package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// controlPlane is a real etcd and kube-apiserver on loopback, the smallest
// API server a kubelet can read RuntimeClasses from: one token with
// system:masters, AlwaysAllow, everything under a temp dir. The binaries
// are those tools/kind/build-bins.sh builds into testenv.CacheDir: make
// e2e-kubelet-features passes their paths in PEAPOD_KUBE_APISERVER and
// PEAPOD_ETCD; unset, the versions the kind tools pin today.
type controlPlane struct {
	dir        string
	server     string // https://127.0.0.1:<port>
	token      string
	kubeconfig string
	http       *http.Client
}

func kubeBinary(t *testing.T, env, rel string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(testenv.CacheDir, rel)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v (set %s, or build it with tools/kind/build-bins.sh)", err, env)
	}
	return p
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	etcdBin := kubeBinary(t, "PEAPOD_ETCD", "etcd-v3.6.17/etcd")
	apiBin := kubeBinary(t, "PEAPOD_KUBE_APISERVER", "kubernetes-v1.37.2/kube-apiserver")
	dir := t.TempDir()
	tok := make([]byte, 16)
	rand.Read(tok)
	cp := &controlPlane{dir: dir, token: hex.EncodeToString(tok), http: &http.Client{Timeout: 10 * time.Second * timeoutScale,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}}

	client, peer, secure := freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)
	cp.server = fmt.Sprintf("https://127.0.0.1:%d", secure)
	startProcess(t, filepath.Join(dir, "etcd.log"), etcdBin, "--name", "e2e", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", client), "--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", client),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peer),
		"--initial-cluster", fmt.Sprintf("e2e=http://127.0.0.1:%d", peer), "--unsafe-no-fsync")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(cp.token+",e2e-admin,e2e-admin,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No endpoint reconciler: it refuses a loopback advertise address, and
	// nothing here uses the kubernetes Service.
	apiExited := startProcess(t, filepath.Join(dir, "apiserver.log"), apiBin, "--endpoint-reconciler-type", "none",
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", client),
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", fmt.Sprint(secure),
		"--cert-dir", filepath.Join(dir, "pki"), "--token-auth-file", tokens, "--authorization-mode", "AlwaysAllow",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-cluster-ip-range", "10.96.0.0/24",
		"--enable-priority-and-fairness=false")

	deadline := time.Now().Add(120 * time.Second * timeoutScale)
	for {
		_, err := cp.request("GET", "/readyz", nil)
		if err == nil {
			break
		}
		exited := false
		select {
		case <-apiExited:
			exited = true
		default:
		}
		if exited || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "apiserver.log"))
			t.Fatalf("kube-apiserver not ready (exited: %v): %v\n%s", exited, err, tail(string(log), 30))
		}
		time.Sleep(500 * time.Millisecond)
	}
	cp.kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: e2e, user: {token: %q}}]
contexts: [{name: e2e, context: {cluster: e2e, user: e2e}}]
current-context: e2e
`, cp.server, cp.token)
	if err := os.WriteFile(cp.kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cp
}

// request sends body (JSON) to the API server and returns the body of a 2xx.
func (cp *controlPlane) request(method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, cp.server+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := cp.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return out, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}

// startProcess runs bin with args, its output in logPath, killed with the
// test (and by PID in cleanup); the channel closes when it exits.
func startProcess(t *testing.T, logPath, bin string, args ...string) <-chan struct{} {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	return exited
}
