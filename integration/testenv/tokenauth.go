package testenv

// A registry behind the Docker registry token flow: Distribution's "token"
// access controller and a small authorization server of our own.
//
// The authorization server is written here rather than taken from a project
// (docker_auth, Harbor's core) because the tests need to know which grant a
// client used, and the protocol is small: the Distribution token spec
// (GET /token with basic auth, docs/spec/auth/token.md), its OAuth2 variant
// (POST /token, docs/spec/auth/oauth.md) and a JWT the registry verifies.
// The registry itself is the real one, so a token it would refuse in
// production is refused here too.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenLifetime is the validity of the access tokens the server issues.
const tokenLifetime = 5 * time.Minute

// TokenCounts tells how many /token requests of each kind a TokenServer
// answered, so tests can assert which flow a client used.
type TokenCounts struct {
	Basic     int // GET with good basic-auth credentials
	Anonymous int // GET without credentials (answered with a token granting nothing)
	Refresh   int // POST grant_type=refresh_token with a known refresh token
	Password  int // POST grant_type=password with good credentials
	Refused   int // any request refused with 401 (bad credentials, unknown refresh token)
}

// Total is the number of /token requests.
func (c TokenCounts) Total() int {
	return c.Basic + c.Anonymous + c.Refresh + c.Password + c.Refused
}

// Since returns the requests made since before was taken.
func (c TokenCounts) Since(before TokenCounts) TokenCounts {
	return TokenCounts{
		Basic:     c.Basic - before.Basic,
		Anonymous: c.Anonymous - before.Anonymous,
		Refresh:   c.Refresh - before.Refresh,
		Password:  c.Password - before.Password,
		Refused:   c.Refused - before.Refused,
	}
}

// TokenServer is an authorization server for a registry using token auth.
// It knows one user; it issues refresh tokens (identity tokens, as
// `docker login` stores them) on request, and access tokens (JWT, ES256,
// signed by a self-signed certificate sent in the x5c header) granting
// authenticated users every scope they ask for and anonymous ones nothing,
// as Docker Hub does for a private repository.
type TokenServer struct {
	Realm   string // http://localhost:PORT/token (listening on 127.0.0.1)
	Service string // the "aud" of the tokens, the registry's service name
	Issuer  string // the "iss" of the tokens

	user, pass string
	key        *ecdsa.PrivateKey
	certDER    []byte

	mu      sync.Mutex
	counts  TokenCounts
	refresh map[string]string // refresh token -> subject
	serial  int
}

// StartRegistryWithTokenAuth starts a TokenServer knowing user:pass and a
// registry like StartRegistry that accepts only the tokens it signs. The key
// and certificate are made for the test. It returns the registry's
// "127.0.0.1:PORT" and the token server.
func StartRegistryWithTokenAuth(t testing.TB, user, pass string) (addr string, tokens *TokenServer) {
	t.Helper()
	if err := ensureRegistryInstalled(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ts := startTokenServer(t, user, pass)
	bundle := filepath.Join(t.TempDir(), "token-root.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.certDER})
	if err := os.WriteFile(bundle, pemCert, 0o644); err != nil {
		t.Fatal(err)
	}
	addr = startRegistryWith(t, fmt.Sprintf(`auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, ts.Realm, ts.Service, ts.Issuer, bundle))
	return addr, ts
}

// startTokenServer starts a TokenServer on a free 127.0.0.1 port, closed
// in t.Cleanup.
func startTokenServer(t testing.TB, user, pass string) *TokenServer {
	t.Helper()
	ts, err := newTokenServer(user, pass)
	if err != nil {
		t.Fatalf("testenv: token server: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(ts.serveToken))
	t.Cleanup(srv.Close)
	// The realm names the server "localhost", not 127.0.0.1: against
	// server-side request forgery, go-containerregistry (v0.22.1 here)
	// refuses a realm that is a loopback or private IP literal unless it is
	// the registry's own host:port, and testenv.Push uses it.
	ts.Realm = fmt.Sprintf("http://localhost:%d/token", srv.Listener.Addr().(*net.TCPAddr).Port)
	return ts
}

func newTokenServer(user, pass string) (*TokenServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// Self-signed: the registry's rootcertbundle holds this very
	// certificate, and x509 verification of a chain of one accepts a leaf
	// that is itself a trusted root.
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "peapod test token issuer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &TokenServer{
		Service: "peapod-test-registry",
		Issuer:  "peapod-test-token-issuer",
		user:    user,
		pass:    pass,
		key:     key,
		certDER: der,
		refresh: map[string]string{},
	}, nil
}

// Counts returns how many requests of each kind the server has answered.
func (ts *TokenServer) Counts() TokenCounts {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.counts
}

// IdentityToken logs in as `docker login` does against such a server (GET
// /token with basic auth and offline_token=true) and returns the refresh
// token it got: what a kubelet passes as AuthConfig.identity_token.
func (ts *TokenServer) IdentityToken(t testing.TB, user, pass string) string {
	t.Helper()
	resp := ts.get(t, url.Values{"service": {ts.Service}, "offline_token": {"true"}, "client_id": {"peapod-test"}}, user, pass)
	if resp.RefreshToken == "" {
		t.Fatal("testenv: token server issued no refresh token")
	}
	return resp.RefreshToken
}

// RegistryToken obtains a bearer token for scope ("repository:NAME:pull")
// as user:pass: what a kubelet passes as AuthConfig.registry_token.
func (ts *TokenServer) RegistryToken(t testing.TB, scope, user, pass string) string {
	t.Helper()
	return ts.get(t, url.Values{"service": {ts.Service}, "scope": {scope}}, user, pass).Token
}

// get is a GET /token by the test itself, which must succeed.
func (ts *TokenServer) get(t testing.TB, q url.Values, user, pass string) tokenResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.Realm+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testenv: GET %s: %v", ts.Realm, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("testenv: GET %s: %s: %s", ts.Realm, res.Status, body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatalf("testenv: token response %q: %v", body, err)
	}
	return tr
}

// tokenResponse is the body of a successful /token answer. GET answers
// carry "token" (and "access_token", its newer name); POST answers, being
// OAuth2, only "access_token".
type tokenResponse struct {
	Token        string `json:"token,omitempty"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
}

func (ts *TokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		ts.serveGet(w, r)
	case http.MethodPost:
		ts.servePost(w, r)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// serveGet is the token spec's flow: credentials in basic auth, scopes and
// offline_token in the query.
func (ts *TokenServer) serveGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, pass, hasAuth := r.BasicAuth()
	var subject string
	switch {
	case !hasAuth:
		ts.count(func(c *TokenCounts) { c.Anonymous++ })
	case ts.goodCredentials(user, pass):
		ts.count(func(c *TokenCounts) { c.Basic++ })
		subject = user
	default:
		ts.refuse(w, "invalid username/password")
		return
	}
	ts.issue(w, subject, q["scope"], subject != "" && q.Get("offline_token") == "true", true)
}

// servePost is the OAuth2 flow (form body): grant_type=refresh_token with
// a refresh token issued earlier, or grant_type=password (with
// access_type=offline for a refresh token).
func (ts *TokenServer) servePost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "refresh_token":
		subject, ok := ts.subjectOf(f.Get("refresh_token"))
		if !ok {
			ts.refuse(w, "unknown refresh token")
			return
		}
		ts.count(func(c *TokenCounts) { c.Refresh++ })
		ts.issue(w, subject, f["scope"], false, false)
	case "password":
		if !ts.goodCredentials(f.Get("username"), f.Get("password")) {
			ts.refuse(w, "invalid username/password")
			return
		}
		ts.count(func(c *TokenCounts) { c.Password++ })
		ts.issue(w, f.Get("username"), f["scope"], f.Get("access_type") == "offline", false)
	default:
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
	}
}

func (ts *TokenServer) goodCredentials(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(ts.user))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(ts.pass))
	return u&p == 1
}

func (ts *TokenServer) subjectOf(refresh string) (string, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	s, ok := ts.refresh[refresh]
	return s, ok && refresh != ""
}

func (ts *TokenServer) count(f func(*TokenCounts)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	f(&ts.counts)
}

// refuse answers 401 with a Distribution-style error body, as real token
// servers do for bad credentials.
func (ts *TokenServer) refuse(w http.ResponseWriter, msg string) {
	ts.count(func(c *TokenCounts) { c.Refused++ })
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": msg}},
	})
}

// issue answers with an access token for subject ("" is anonymous and gets
// no access) and scopes, and a new refresh token when offline.
func (ts *TokenServer) issue(w http.ResponseWriter, subject string, scopes []string, offline, legacyField bool) {
	access := grantedAccess(subject, scopes)
	now := time.Now()
	jwt, err := ts.sign(subject, access, now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp := tokenResponse{
		AccessToken: jwt,
		Scope:       strings.Join(scopes, " "),
		ExpiresIn:   int(tokenLifetime / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	}
	if legacyField {
		resp.Token = jwt
	}
	if offline {
		resp.RefreshToken = ts.newRefreshToken(subject)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (ts *TokenServer) newRefreshToken(subject string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.refresh[tok] = subject
	return tok
}

// resourceActions is one entry of the JWT's "access" claim.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// grantedAccess parses scopes ("type:name:action,action", several per
// parameter when space-separated) into the access claim: everything asked
// for when subject is a user, nothing when anonymous.
func grantedAccess(subject string, scopes []string) []resourceActions {
	access := []resourceActions{}
	if subject == "" {
		return access
	}
	for _, param := range scopes {
		for _, s := range strings.Fields(param) {
			first, last := strings.Index(s, ":"), strings.LastIndex(s, ":")
			if first < 0 || first == last {
				continue
			}
			access = append(access, resourceActions{
				Type: s[:first], Name: s[first+1 : last], Actions: strings.Split(s[last+1:], ","),
			})
		}
	}
	return access
}

// sign makes the JWT: ES256 over the base64url header and claims, the
// signature being r||s (32 bytes each) as JWS requires; the certificate in
// x5c lets the registry check the key against its rootcertbundle.
func (ts *TokenServer) sign(subject string, access []resourceActions, now time.Time) (string, error) {
	header := map[string]any{
		"typ": "JWT",
		"alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	}
	ts.mu.Lock()
	ts.serial++
	jti := fmt.Sprintf("peapod-test-%d", ts.serial)
	ts.mu.Unlock()
	claims := map[string]any{
		"iss":    ts.Issuer,
		"sub":    subject,
		"aud":    ts.Service,
		"exp":    now.Add(tokenLifetime).Unix(),
		"nbf":    now.Add(-time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    jti,
		"access": access,
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := b64url(h) + "." + b64url(c)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, digest[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + b64url(sig), nil
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
