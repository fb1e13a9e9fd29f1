package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/repstream/repstream/stream"
)

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(subjects ...string) jwt.MapClaims {
	return jwt.MapClaims{"subjects": subjects, "exp": time.Now().Add(time.Hour).Unix()}
}

func TestAuthAlgorithms(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPEM := pemPublic(t, &rsaKey.PublicKey)
	a, err := NewAuthenticator(AuthConfig{
		HS256SecretFile: writeFile(t, "secret", append(secret, '\n')),
		PublicKeys:      []string{writeFile(t, "rsa.pem", rsaPEM), writeFile(t, "ec.pem", pemPublic(t, &ecKey.PublicKey))},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(name, tok string) {
		t.Helper()
		g, err := a.Verify(tok)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if !g.Allows("seller:1") || g.Allows("buyer:1") || !g.AllowsPrefix("seller:") || g.AllowsPrefix("sell") {
			t.Errorf("%s: grant %+v", name, g)
		}
	}
	refused := func(name, tok, reason string) {
		t.Helper()
		_, err := a.Verify(tok)
		var ae *AuthError
		if !errors.As(err, &ae) {
			t.Errorf("%s: accepted", name)
			return
		}
		if reason != "" && ae.Reason != reason {
			t.Errorf("%s: reason %s (%v), want %s", name, ae.Reason, err, reason)
		}
	}
	ok("HS256", sign(t, jwt.SigningMethodHS256, secret, "", claims("seller:*")))
	ok("RS256", sign(t, jwt.SigningMethodRS256, rsaKey, "", claims("seller:*")))
	ok("ES256", sign(t, jwt.SigningMethodES256, ecKey, "", claims("seller:*")))
	refused("ES256 other key", sign(t, jwt.SigningMethodES256, otherEC, "", claims("seller:*")), "signature")
	refused("HS256 wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another secret of 32 bytes......"), "", claims("*")), "signature")
	refused("HS384", sign(t, jwt.SigningMethodHS384, secret, "", claims("*")), "")
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims("*"))
	refused("alg none", none, "")
	// Algorithm confusion: an HS256 token whose "secret" is the RSA public key PEM.
	refused("HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, rsaPEM, "", claims("*")), "signature")
	refused("expired", sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"subjects": []string{"*"}, "exp": time.Now().Add(-time.Minute).Unix()}), "expired")
	refused("garbage", "a.b.c", "malformed")
	refused("empty", "", "missing")

	// With only public keys configured, HS256 is not even an accepted method.
	b, err := NewAuthenticator(AuthConfig{PublicKeys: []string{writeFile(t, "rsa.pem", rsaPEM)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(sign(t, jwt.SigningMethodHS256, rsaPEM, "", claims("*"))); err == nil {
		t.Error("RS256-only authenticator accepted an HS256 token keyed with its public key")
	}
}

func TestAuthJWKS(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set := map[string]any{"keys": []map[string]any{
		rsaJWK(rsaKey, "r1"), ecJWK(ecKey, "e1"),
		{"kty": "oct", "kid": "ignored"},
		{"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
	}}
	raw, _ := json.Marshal(set)
	a, err := NewAuthenticator(AuthConfig{JWKSFile: writeFile(t, "jwks.json", raw), Issuer: "idp", Audience: "repstream"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := claims("*")
	c["iss"], c["aud"] = "idp", "repstream"
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"rsa by kid", sign(t, jwt.SigningMethodRS256, rsaKey, "r1", c), true},
		{"ec by kid", sign(t, jwt.SigningMethodES256, ecKey, "e1", c), true},
		{"ec without kid", sign(t, jwt.SigningMethodES256, ecKey, "", c), true},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey, "r2", c), false},
		{"wrong issuer", sign(t, jwt.SigningMethodRS256, rsaKey, "r1", jwt.MapClaims{"iss": "x", "aud": "repstream", "subjects": []string{"*"}}), false},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, rsaKey, "r1", jwt.MapClaims{"iss": "idp", "aud": "x", "subjects": []string{"*"}}), false},
	} {
		g, err := a.Verify(tc.tok)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
		}
		if err == nil && !g.All {
			t.Errorf("%s: grant %+v", tc.name, g)
		}
	}
}

func TestAuthConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  AuthConfig
		want string
	}{
		{AuthConfig{}, "auth.jwt_hs256_secret_file"},
		{AuthConfig{HS256SecretFile: writeFile(t, "short", []byte("short"))}, "at least 32"},
		{AuthConfig{HS256SecretFile: "/nonexistent/jwt"}, "auth.jwt_hs256_secret_file"},
		{AuthConfig{PublicKeys: []string{writeFile(t, "bad.pem", []byte("nothing"))}}, "auth.jwt_public_keys[0]"},
		{AuthConfig{JWKSFile: writeFile(t, "bad.json", []byte("{"))}, "auth.jwks_file"},
		{AuthConfig{JWKSFile: writeFile(t, "k", []byte("{}")), Leeway: -time.Second}, "auth.leeway"},
	} {
		_, err := NewAuthenticator(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want mention of %s", tc.cfg, err, tc.want)
		}
	}
	a, err := NewAuthenticator(AuthConfig{Insecure: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := a.Verify(""); err != nil || !g.All {
		t.Fatalf("insecure: %+v %v", g, err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{MaxFrameBytes: -1}, "api.max_frame_bytes"},
		{Config{MaxFrameBytes: 10}, "api.max_frame_bytes"},
		{Config{Heartbeat: time.Millisecond}, "api.heartbeat"},
		{Config{Heartbeat: 10 * time.Second, PongTimeout: 5 * time.Second}, "api.pong_timeout"},
		{Config{MinThrottle: time.Hour}, "api.min_throttle"},
		{Config{AllowedOrigins: []string{"dash.example"}}, "api.allowed_origins"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want mention of %s", tc.cfg, err, tc.want)
		}
	}
	if got := (Config{}).withDefaults().throttle(1); got != 10*time.Millisecond {
		t.Errorf("throttle(1ms) = %s", got)
	}
}

func TestGrantSelector(t *testing.T) {
	g := &Grant{Subjects: map[string]bool{"a:1": true}, Prefixes: []string{"b:"}}
	for _, tc := range []struct {
		sel stream.Selector
		ok  bool
	}{
		{stream.Selector{Subjects: []string{"a:1", "b:7"}}, true},
		{stream.Selector{Subjects: []string{"a:2"}}, false},
		{stream.Selector{Prefix: "b:x"}, true},
		{stream.Selector{Prefix: "a:"}, false},
	} {
		if ok, _ := g.AllowsSelector(tc.sel); ok != tc.ok {
			t.Errorf("%+v: %v", tc.sel, ok)
		}
	}
}
