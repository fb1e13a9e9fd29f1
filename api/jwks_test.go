package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func rsaJWK(k *rsa.PrivateKey, kid string) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(k *ecdsa.PrivateKey, kid string) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256",
		"x": b64(k.X.FillBytes(make([]byte, 32))), "y": b64(k.Y.FillBytes(make([]byte, 32)))}
}

func jwksJSON(t *testing.T, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jwksServer is an identity provider's JWKS endpoint whose set the test
// rotates, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		b := s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(b) //nolint:errcheck
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(b []byte) {
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

// TestAuthJWKSURLRotation: keys come from an HTTP JWKS endpoint; after the
// provider rotates, a token with the new kid verifies at once (one fetch),
// unknown kids cannot make it fetch more than once per minimum interval,
// and the periodic refresh drops the removed key.
func TestAuthJWKSURLRotation(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	idp := newJWKSServer(t, jwksJSON(t, rsaJWK(k1, "k1")))
	a, err := NewAuthenticator(AuthConfig{JWKSURL: idp.URL + "/.well-known/jwks.json",
		JWKSRefreshInterval: 300 * time.Millisecond, JWKSMinRefreshInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if n := idp.fetches.Load(); n != 1 {
		t.Fatalf("fetches at start: %d, want 1", n)
	}
	tok1 := sign(t, jwt.SigningMethodRS256, k1, "k1", claims("*"))
	if _, err := a.Verify(tok1); err != nil {
		t.Fatalf("k1: %v", err)
	}

	// Rotation: the provider now publishes k2 alone.
	idp.set(jwksJSON(t, ecJWK(k2, "k2")))
	before := idp.fetches.Load()
	if g, err := a.Verify(sign(t, jwt.SigningMethodES256, k2, "k2", claims("seller:*"))); err != nil || !g.Allows("seller:1") {
		t.Fatalf("k2 after rotation: %+v %v", g, err)
	}
	if n := idp.fetches.Load() - before; n != 1 {
		t.Fatalf("fetches for the new kid: %d, want 1", n)
	}

	// Forged kids: refused, and the rate limit allows no further fetch.
	before = idp.fetches.Load()
	for i := range 20 {
		_, err := a.Verify(sign(t, jwt.SigningMethodES256, k2, "forged"+string(rune('a'+i)), claims("*")))
		var ae *AuthError
		if !errors.As(err, &ae) {
			t.Fatalf("forged kid accepted: %v", err)
		}
	}
	if n := idp.fetches.Load() - before; n > 1 {
		t.Fatalf("20 unknown kids caused %d fetches, want at most 1 per jwks_min_refresh_interval", n)
	}

	// The periodic refresh has dropped k1 (or drops it shortly).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := a.Verify(tok1); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("k1 still verifies after it left the set and refreshes ran")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAuthJWKSURLErrors(t *testing.T) {
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>")) //nolint:errcheck
	}))
	defer notJSON.Close()
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()
	for _, tc := range []struct{ url, want string }{
		{"idp.example.com/jwks", "auth.jwks_url"},
		{notJSON.URL, "auth.jwks_url"},
		{missing.URL, "auth.jwks_url"},
	} {
		a, err := NewAuthenticator(AuthConfig{JWKSURL: tc.url}, nil)
		if err == nil {
			a.Close()
			t.Errorf("%s: accepted", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want mention of %s", tc.url, err, tc.want)
		}
	}
}

// TestAuthJWKSFileReread: a JWKS file rewritten with a new key is used
// without a restart; one rewritten with garbage keeps the last good keys.
func TestAuthJWKSFileReread(t *testing.T) {
	old := jwksFileCheckEvery
	jwksFileCheckEvery = 0
	defer func() { jwksFileCheckEvery = old }()
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	path := writeFile(t, "jwks.json", jwksJSON(t, ecJWK(k1, "k1")))
	a, err := NewAuthenticator(AuthConfig{JWKSFile: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok1 := sign(t, jwt.SigningMethodES256, k1, "k1", claims("*"))
	tok2 := sign(t, jwt.SigningMethodES256, k2, "k2", claims("*"))
	if _, err := a.Verify(tok1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok2); err == nil {
		t.Fatal("k2 accepted before it was in the file")
	}
	if err := os.WriteFile(path, jwksJSON(t, ecJWK(k2, "k2"), ecJWK(k1, "k1-renamed")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok2); err != nil {
		t.Fatalf("k2 after the file changed: %v", err)
	}
	if _, err := a.Verify(tok1); err == nil {
		t.Fatal("kid k1 accepted after it left the file")
	}
	if err := os.WriteFile(path, []byte(`{"keys": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok2); err != nil {
		t.Fatalf("a broken rewrite dropped the good keys: %v", err)
	}
}

func TestAuthExpAndIat(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	path := writeFile(t, "secret", secret)
	no := false
	strict, err := NewAuthenticator(AuthConfig{HS256SecretFile: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lax, err := NewAuthenticator(AuthConfig{HS256SecretFile: path, RequireExp: &no, Leeway: 30 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := func(c jwt.MapClaims) string {
		c["subjects"] = []string{"*"}
		return sign(t, jwt.SigningMethodHS256, secret, "", c)
	}
	for _, tc := range []struct {
		name   string
		a      *Authenticator
		tok    string
		reason string // "" means accepted
	}{
		{"no exp, default", strict, tok(jwt.MapClaims{}), "no_exp"},
		{"no exp, require_exp false", lax, tok(jwt.MapClaims{}), ""},
		{"exp 10s ago, no leeway", strict, tok(jwt.MapClaims{"exp": now.Add(-10 * time.Second).Unix()}), "expired"},
		{"exp 10s ago, 30s leeway", lax, tok(jwt.MapClaims{"exp": now.Add(-10 * time.Second).Unix()}), ""},
		{"iat an hour ahead", strict, tok(jwt.MapClaims{"exp": now.Add(2 * time.Hour).Unix(), "iat": now.Add(time.Hour).Unix()}), "issued_in_future"},
		{"iat an hour ahead, 30s leeway", lax, tok(jwt.MapClaims{"iat": now.Add(time.Hour).Unix()}), "issued_in_future"},
		{"iat 10s ahead, 30s leeway", lax, tok(jwt.MapClaims{"iat": now.Add(10 * time.Second).Unix()}), ""},
		{"iat now", strict, tok(jwt.MapClaims{"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}), ""},
		{"nbf ahead", strict, tok(jwt.MapClaims{"exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}), "not_yet_valid"},
	} {
		_, err := tc.a.Verify(tc.tok)
		var ae *AuthError
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.reason != "" && !errors.As(err, &ae):
			t.Errorf("%s: accepted", tc.name)
		case tc.reason != "" && ae.Reason != tc.reason:
			t.Errorf("%s: reason %s (%v), want %s", tc.name, ae.Reason, err, tc.reason)
		}
	}
	_, err = strict.Verify(tok(jwt.MapClaims{}))
	if err == nil || !strings.Contains(err.Error(), "auth.require_exp") {
		t.Errorf("a token without exp is refused without naming the opt-out: %v", err)
	}
}

func TestAuthAdminClaim(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	path := writeFile(t, "secret", secret)
	def, err := NewAuthenticator(AuthConfig{HS256SecretFile: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	custom, err := NewAuthenticator(AuthConfig{HS256SecretFile: path, AdminClaim: "ops"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(extra jwt.MapClaims) string {
		c := claims("seller:*")
		for k, v := range extra {
			c[k] = v
		}
		return sign(t, jwt.SigningMethodHS256, secret, "", c)
	}
	for _, tc := range []struct {
		name  string
		a     *Authenticator
		tok   string
		admin bool
	}{
		{"no claim", def, tok(nil), false},
		{"repstream_admin true", def, tok(jwt.MapClaims{"repstream_admin": true}), true},
		{"repstream_admin false", def, tok(jwt.MapClaims{"repstream_admin": false}), false},
		{"repstream_admin \"true\" (a string)", def, tok(jwt.MapClaims{"repstream_admin": "true"}), false},
		{"ops true, default name", def, tok(jwt.MapClaims{"ops": true}), false},
		{"ops true, admin_claim ops", custom, tok(jwt.MapClaims{"ops": true}), true},
		{"repstream_admin, admin_claim ops", custom, tok(jwt.MapClaims{"repstream_admin": true}), false},
	} {
		g, err := tc.a.Verify(tc.tok)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if g.Admin != tc.admin || !g.Allows("seller:1") {
			t.Errorf("%s: grant %+v, want admin %v", tc.name, g, tc.admin)
		}
	}
}
