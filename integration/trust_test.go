package integration

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/signature/signer"
	"go.podman.io/image/v5/signature/sigstore"
	"go.podman.io/image/v5/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/peapod-cri/peapod/integration/testenv"
)

// TestSignaturePolicy: a containers-policy.json(5) checked at every pull,
// against images the test signs with keys it makes on a real registry:
//   - GPG simple signing (signedBy), the signature in a lookaside
//     directory named by registries.d;
//   - sigstore (sigstoreSigned), the signature stored as a registry
//     attachment by containers/image's copy (use-sigstore-attachments).
//
// The same image unsigned, a tampered GPG signature, an authentic GPG
// signature of another manifest, a sigstore signature by another key and a reject rule are refused with the kubelet's
// SignatureValidationFailed error naming the image and the rule, and leave
// no image and no layer behind. A SIGHUP applies a changed policy.
func TestSignaturePolicy(t *testing.T) {
	reg := testenv.StartRegistry(t)
	dir := t.TempDir()
	img, err := testenv.RandomImage(1, 64<<10, 0x7e57)
	if err != nil {
		t.Fatal(err)
	}
	man, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	manDigest := digest.FromBytes(man)
	for _, repo := range []string{"gpg", "unsigned", "tampered", "forged", "rejected", "sigstore-src", "unsigned-sigstore"} {
		testenv.Push(t, reg+"/trust/"+repo+":v1", img, "", "")
	}

	// GPG: a key pair of the test's; signatures as containers/image makes
	// them (signature.SignDockerManifest), written where the lookaside
	// layout puts them: <base>/<repo path>@sha256=<hex>/signature-1.
	entity, err := openpgp.NewEntity("peapod test", "", "test@peapod.invalid", &packet.Config{RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	gpgPub := filepath.Join(dir, "pubring.gpg")
	var pub bytes.Buffer
	if err := entity.Serialize(&pub); err != nil {
		t.Fatal(err)
	}
	writeFile(t, gpgPub, pub.String())
	lookaside := filepath.Join(dir, "lookaside")
	sign := func(repo string) []byte {
		sig, err := signature.SignDockerManifest(man, reg+"/trust/"+repo+":v1", testGPGMechanism{entity},
			fmt.Sprintf("%X", entity.PrimaryKey.Fingerprint))
		if err != nil {
			t.Fatalf("sign %s: %v", repo, err)
		}
		return sig
	}
	putSig := func(repo string, sig []byte) {
		d := filepath.Join(lookaside, "trust", repo+"@sha256="+manDigest.Encoded())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, "signature-1"), string(sig))
	}
	putSig("gpg", sign("gpg"))
	// Tampered: the signed payload's identity edited in place (the literal
	// data is not compressed), so the signature no longer matches it.
	tampered := sign("tampered")
	if !bytes.Contains(tampered, []byte("/trust/tampered:v1")) {
		t.Fatal("signed payload not found in the signature")
	}
	putSig("tampered", bytes.Replace(tampered, []byte("/trust/tampered:v1"), []byte("/trust/tampered:v2"), 1))
	// Forged: an authentic signature, but of another image's manifest.
	other, err := testenv.RandomImage(1, 1024, 0xf0e)
	if err != nil {
		t.Fatal(err)
	}
	otherMan, err := other.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := signature.SignDockerManifest(otherMan, reg+"/trust/forged:v1", testGPGMechanism{entity},
		fmt.Sprintf("%X", entity.PrimaryKey.Fingerprint))
	if err != nil {
		t.Fatal(err)
	}
	putSig("forged", forged)

	// sigstore: the registries.d the daemon reads, also used to sign.
	registriesD := filepath.Join(dir, "registries.d")
	if err := os.MkdirAll(registriesD, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(registriesD, "peapod-test.yaml"), fmt.Sprintf(
		"default-docker:\n  lookaside: file://%s\n  use-sigstore-attachments: true\n", lookaside))
	cosignPub := filepath.Join(dir, "cosign.pub")
	cosignKey := sigstoreKeys(t, dir, "cosign", cosignPub)
	otherKey := sigstoreKeys(t, dir, "other", filepath.Join(dir, "other.pub"))
	sigstoreCopy(t, reg, registriesD, "trust/sigstore-src:v1", "trust/sigstore:v1", cosignKey)
	sigstoreCopy(t, reg, registriesD, "trust/sigstore-src:v1", "trust/sigstore-otherkey:v1", otherKey)
	gpgRule := fmt.Sprintf(`[{"type": "signedBy", "keyType": "GPGKeys", "keyPath": %q}]`, gpgPub)
	sigstoreRule := fmt.Sprintf(`[{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "matchRepository"}}]`, cosignPub)
	policy := filepath.Join(dir, "policy.json")
	writePolicy := func(gpgRepoRule string) {
		writeFile(t, policy, fmt.Sprintf(`{
  "default": [{"type": "insecureAcceptAnything"}],
  "transports": {"docker": {
    "%[1]s/trust/gpg": %[2]s,
    "%[1]s/trust/unsigned": %[3]s,
    "%[1]s/trust/tampered": %[3]s,
    "%[1]s/trust/forged": %[3]s,
    "%[1]s/trust/sigstore": %[4]s,
    "%[1]s/trust/sigstore-otherkey": %[4]s,
    "%[1]s/trust/unsigned-sigstore": %[4]s,
    "%[1]s/trust/rejected": [{"type": "reject"}]
  }}
}`, reg, gpgRepoRule, gpgRule, sigstoreRule))
	}
	writePolicy(gpgRule)

	d := newDaemon(t, reg)
	cfgPath := filepath.Join(d.Dir, "trust.toml")
	writeFile(t, cfgPath, fmt.Sprintf("signature_policy = %q\nregistries_d = %q\n", policy, registriesD))
	d.Args = append(d.Args, "--config", cfgPath)
	d.Start()

	c := ctx(t)
	refused := func(repo, scope, rule string) {
		t.Helper()
		ref := reg + "/trust/" + repo + ":v1"
		_, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err == nil {
			t.Errorf("%s: pulled, want refused by the policy", ref)
			return
		}
		st, _ := status.FromError(err)
		msg := st.Message()
		if st.Code() != codes.Unknown || !strings.HasPrefix(msg, "SignatureValidationFailed: ") ||
			!strings.Contains(msg, ref) || !strings.Contains(msg, fmt.Sprintf("transports.docker[%q] (%s)", reg+"/trust/"+scope, rule)) ||
			!strings.Contains(msg, policy) {
			t.Errorf("%s: error %v, want code Unknown, \"SignatureValidationFailed: \", the image, %s and the rule %s (%s)",
				ref, err, policy, scope, rule)
		}
		t.Logf("%s refused: %s", repo, msg)
	}
	pulled := func(repo string) {
		t.Helper()
		ref := reg + "/trust/" + repo + ":v1"
		resp, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			return
		}
		st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || st.Image == nil || st.Image.Id != resp.ImageRef {
			t.Errorf("%s: status after the pull: %v, %v", ref, st, err)
		}
	}

	// Refusals first, on an empty store: nothing may be left of them.
	refused("unsigned", "unsigned", "signedBy")
	refused("tampered", "tampered", "signedBy")
	refused("forged", "forged", "signedBy")
	refused("unsigned-sigstore", "unsigned-sigstore", "sigstoreSigned")
	refused("sigstore-otherkey", "sigstore-otherkey", "sigstoreSigned")
	refused("rejected", "rejected", "reject")
	if list, err := d.Img.ListImages(c, &runtimeapi.ListImagesRequest{}); err != nil || len(list.Images) != 0 {
		t.Errorf("images after refused pulls: %v, %v; want none", list, err)
	}
	if n := storedLayers(t, d.Root); n != 0 {
		t.Errorf("%d layers stored after refused pulls, want 0", n)
	}

	pulled("gpg")
	pulled("sigstore")
	pulled("sigstore-src") // not covered by a rule: the default accepts it
	if n := storedLayers(t, d.Root); n != 1 {
		t.Errorf("%d layers stored after the pulls of one image, want 1", n)
	}

	// SIGHUP applies a changed policy: trust/gpg now rejected, even
	// though the image is stored.
	writePolicy(`[{"type": "reject"}]`)
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload", func() bool { return strings.Contains(readLog(t, d), "SIGHUP: config reloaded") })
	refused("gpg", "gpg", "reject")

	// A policy that does not parse is refused on SIGHUP; the running one stays.
	writeFile(t, policy, "{not json")
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the refused reload", func() bool {
		return strings.Contains(readLog(t, d), "registries config and signature policy not reloaded")
	})
	refused("gpg", "gpg", "reject")
	pulled("sigstore")
}

// TestRegistriesDropInMirrorOnly: a registries.conf.d drop-in
// (registries_conf_dir) gives an upstream registry a mirror and
// blocked = true, so pulls go only through the mirror; the upstream is an
// address the test listens on and counts connections to. A short-name
// alias from a drop-in resolves to the upstream name. Control: without
// blocked, a pull the mirror cannot serve does reach the upstream.
func TestRegistriesDropInMirrorOnly(t *testing.T) {
	mirror := testenv.StartRegistry(t)
	img, err := testenv.RandomImage(1, 16<<10, 0xd20b)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Push(t, mirror+"/team/app:v1", img, "", "")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var contacts atomic.Int32
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			contacts.Add(1)
			conn.Close()
		}
	}()
	upstream := lis.Addr().String()

	d := newDaemon(t, mirror) // registries.conf: the mirror, plain HTTP; nothing for upstream
	dropins := filepath.Join(d.Dir, "registries.conf.d")
	if err := os.MkdirAll(dropins, 0o755); err != nil {
		t.Fatal(err)
	}
	mirrorOnly := func(blocked bool) {
		writeFile(t, filepath.Join(dropins, "50-mirror.conf"), fmt.Sprintf(`[[registry]]
prefix = %[1]q
location = %[1]q
blocked = %[3]t
[[registry.mirror]]
location = %[2]q
insecure = true
`, upstream, mirror, blocked))
	}
	mirrorOnly(true)
	writeFile(t, filepath.Join(dropins, "000-shortnames.conf"), fmt.Sprintf("[aliases]\n\"peapod-alias-app\" = %q\n", upstream+"/team/app"))
	cfgPath := filepath.Join(d.Dir, "trust.toml")
	writeFile(t, cfgPath, fmt.Sprintf("registries_conf_dir = %q\n", dropins))
	d.Args = append(d.Args, "--config", cfgPath)
	d.Start()
	c := ctx(t)

	ref := upstream + "/team/app:v1"
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("pull %s through the drop-in's mirror: %v", ref, err)
	}
	_, err = d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: upstream + "/team/missing:v1"}})
	if err == nil {
		t.Fatal("pull of an image the mirror lacks succeeded")
	}
	t.Logf("mirror-only pull of a missing image: %v", err)
	if status.Code(err) != codes.NotFound {
		t.Errorf("missing image: code %v, want NotFound", status.Code(err))
	}
	resp, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "peapod-alias-app:v1"}})
	if err != nil {
		t.Fatalf("pull by alias: %v", err)
	}
	st, err := d.Img.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
	if err != nil || st.Image == nil || !contains(st.Image.RepoTags, ref) {
		t.Errorf("image pulled by alias: %v, %v; want tagged %s", st, err, ref)
	}
	if n := contacts.Load(); n != 0 {
		t.Fatalf("the blocked upstream %s was contacted %d times", upstream, n)
	}

	// Control: the same drop-in without blocked falls back to upstream.
	mirrorOnly(false)
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload", func() bool { return strings.Contains(readLog(t, d), "SIGHUP: config reloaded") })
	if _, err := d.Img.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: upstream + "/team/missing:v1"}}); err == nil {
		t.Fatal("pull of an image neither has succeeded")
	}
	if contacts.Load() == 0 {
		t.Fatal("without blocked, the upstream was not contacted: the watch proves nothing")
	}
}

// storedLayers counts the layers in the daemon's containers/storage.
func storedLayers(t *testing.T, root string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "storage", "overlay-layers", "layers.json"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var layers []json.RawMessage
	if err := json.Unmarshal(data, &layers); err != nil {
		t.Fatalf("layers.json: %v", err)
	}
	return len(layers)
}

// sigstoreKeys makes a sigstore key pair (containers/image's
// signature/sigstore), writes the public key to pubPath and returns a
// signer with the private key.
func sigstoreKeys(t *testing.T, dir, name, pubPath string) *signer.Signer {
	t.Helper()
	pass := []byte("peapod-test")
	keys, err := sigstore.GenerateKeyPair(pass)
	if err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(dir, name+".key")
	writeFile(t, priv, string(keys.PrivateKey))
	writeFile(t, pubPath, string(keys.PublicKey))
	s, err := sigstore.NewSigner(sigstore.WithPrivateKeyFile(priv, pass))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sigstoreCopy copies src to dst on the registry reg with containers/image,
// signing dst with s; the signature goes to the registry as a sigstore
// attachment (registriesD says use-sigstore-attachments).
func sigstoreCopy(t *testing.T, reg, registriesD, src, dst string, s *signer.Signer) {
	t.Helper()
	srcRef, err := docker.ParseReference("//" + reg + "/" + src)
	if err != nil {
		t.Fatal(err)
	}
	dstRef, err := docker.ParseReference("//" + reg + "/" + dst)
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "registries.conf")
	writeFile(t, empty, fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg))
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    empty,
		SystemRegistriesConfDirPath: filepath.Join(t.TempDir(), "none"),
		RegistriesDirPath:           registriesD,
		DockerInsecureSkipTLSVerify: types.OptionalBoolTrue,
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Destroy()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := copy.Image(c, pc, dstRef, srcRef, &copy.Options{
		SourceCtx: sys, DestinationCtx: sys, Signers: []*signer.Signer{s},
	}); err != nil {
		t.Fatalf("sign and copy %s to %s: %v", src, dst, err)
	}
}

// testGPGMechanism signs with an openpgp entity of the test's: the pure-Go
// openpgp mechanism containers/image is built with verifies but does not
// sign. Only Sign is used (by signature.SignDockerManifest).
type testGPGMechanism struct{ e *openpgp.Entity }

func (testGPGMechanism) Close() error           { return nil }
func (testGPGMechanism) SupportsSigning() error { return nil }
func (m testGPGMechanism) Sign(input []byte, _ string) ([]byte, error) {
	var buf bytes.Buffer
	w, err := openpgp.Sign(&buf, m.e, nil, &packet.Config{DefaultHash: crypto.SHA256})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(input); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
func (testGPGMechanism) Verify([]byte) ([]byte, string, error) {
	return nil, "", fmt.Errorf("not implemented")
}
func (testGPGMechanism) UntrustedSignatureContents([]byte) ([]byte, string, error) {
	return nil, "", fmt.Errorf("not implemented")
}
