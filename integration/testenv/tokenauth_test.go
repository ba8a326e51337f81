package testenv

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// tokenCall makes one /token request (POST when form is not nil) and
// returns the status and the decoded answer.
func tokenCall(t *testing.T, ts *TokenServer, query, form url.Values, user, pass string) (int, tokenResponse) {
	t.Helper()
	method, body := http.MethodGet, ""
	if form != nil {
		method, body = http.MethodPost, form.Encode()
	}
	req, err := http.NewRequest(method, ts.Realm+"?"+query.Encode(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tr tokenResponse
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(&tr); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode, tr
}

// jwtParts decodes a JWT's header and claims and checks its ES256
// signature against the certificate in x5c, as the registry does (but for
// the chain, which the registry tests below).
func jwtParts(t *testing.T, jwt string) (header struct {
	Alg string   `json:"alg"`
	X5c []string `json:"x5c"`
}, claims struct {
	Iss, Sub, Aud, Jti string
	Exp, Nbf, Iat      int64
	Access             []resourceActions
}) {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts", len(parts))
	}
	decode := func(i int, v any) {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if v != nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	decode(0, &header)
	decode(1, &claims)
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 || header.Alg != "ES256" || len(header.X5c) != 1 {
		t.Fatalf("JWT header %+v, signature of %d bytes (%v)", header, len(sig), err)
	}
	der, _ := base64.StdEncoding.DecodeString(header.X5c[0])
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(cert.PublicKey.(*ecdsa.PublicKey), digest[:], r, s) {
		t.Fatal("JWT signature does not verify")
	}
	return header, claims
}

// The token server's grants and refusals, including the POST password
// grant that neither containers/image nor go-containerregistry use.
func TestTokenServer(t *testing.T) {
	ts := startTokenServer(t, "kube", "s3cret")
	scope := url.Values{"service": {ts.Service}, "scope": {"repository:a/b:pull,push"}}

	if code, _ := tokenCall(t, ts, scope, nil, "kube", "nope"); code != http.StatusUnauthorized {
		t.Errorf("GET with a wrong password: %d", code)
	}
	code, got := tokenCall(t, ts, scope, nil, "kube", "s3cret")
	if code != http.StatusOK || got.Token == "" || got.Token != got.AccessToken || got.RefreshToken != "" {
		t.Fatalf("GET with basic auth: %d %+v", code, got)
	}
	_, claims := jwtParts(t, got.Token)
	if claims.Iss != ts.Issuer || claims.Aud != ts.Service || claims.Sub != "kube" || claims.Jti == "" ||
		claims.Nbf > claims.Iat || claims.Exp <= claims.Iat || len(claims.Access) != 1 ||
		claims.Access[0].Type != "repository" || claims.Access[0].Name != "a/b" ||
		strings.Join(claims.Access[0].Actions, ",") != "pull,push" {
		t.Errorf("claims %+v", claims)
	}
	code, got = tokenCall(t, ts, scope, nil, "", "")
	if _, anon := jwtParts(t, got.Token); code != http.StatusOK || anon.Sub != "" || len(anon.Access) != 0 {
		t.Errorf("anonymous GET: %d, claims %+v; want a token granting nothing", code, anon)
	}

	password := url.Values{"grant_type": {"password"}, "username": {"kube"}, "password": {"s3cret"},
		"access_type": {"offline"}, "scope": {"repository:a/b:pull"}, "service": {ts.Service}}
	code, got = tokenCall(t, ts, nil, password, "", "")
	if code != http.StatusOK || got.AccessToken == "" || got.RefreshToken == "" {
		t.Fatalf("POST password grant: %d %+v", code, got)
	}
	password.Set("password", "nope")
	if code, _ := tokenCall(t, ts, nil, password, "", ""); code != http.StatusUnauthorized {
		t.Errorf("POST password grant with a wrong password: %d", code)
	}
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {got.RefreshToken}, "scope": {"repository:c/d:pull"}}
	code, got = tokenCall(t, ts, nil, refresh, "", "")
	if _, c := jwtParts(t, got.AccessToken); code != http.StatusOK || c.Sub != "kube" || len(c.Access) != 1 || c.Access[0].Name != "c/d" {
		t.Errorf("POST refresh grant: %d, claims %+v", code, c)
	}
	refresh.Set("refresh_token", "forged")
	if code, _ := tokenCall(t, ts, nil, refresh, "", ""); code != http.StatusUnauthorized {
		t.Errorf("POST refresh grant with an unknown token: %d", code)
	}
	want := TokenCounts{Basic: 1, Anonymous: 1, Refresh: 1, Password: 1, Refused: 3}
	if c := ts.Counts(); c != want {
		t.Errorf("counts %+v, want %+v", c, want)
	}
}

// The real registry accepts the server's tokens (x5c chain checked against
// its rootcertbundle) and refuses anonymous clients.
func TestRegistryWithTokenAuth(t *testing.T) {
	addr, ts := StartRegistryWithTokenAuth(t, "kube", "s3cret")
	img, err := RandomImage(1, 1024, 7)
	if err != nil {
		t.Fatal(err)
	}
	ref := addr + "/private/random:1"
	Push(t, ref, img, "kube", "s3cret")
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: "kube", Password: "s3cret"})); err != nil {
		t.Errorf("read back with credentials: %v", err)
	}
	if _, err := remote.Image(r); err == nil {
		t.Error("anonymous read succeeded")
	}
	if c := ts.Counts(); c.Basic == 0 || c.Anonymous == 0 {
		t.Errorf("token server saw %+v", c)
	}
}
