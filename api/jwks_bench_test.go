package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkVerifyJWKS verifies tokens against a JWKS file of four keys,
// picked by kid (RS256, ES256) or, without kid, by trying the keys.
func BenchmarkVerifyJWKS(b *testing.B) {
	b64 := base64.RawURLEncoding.EncodeToString
	var keys []map[string]any
	var rsaKeys []*rsa.PrivateKey
	var ecKeys []*ecdsa.PrivateKey
	for i := range 2 {
		r, _ := rsa.GenerateKey(rand.Reader, 2048)
		e, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		rsaKeys, ecKeys = append(rsaKeys, r), append(ecKeys, e)
		keys = append(keys,
			map[string]any{"kty": "RSA", "kid": "r" + string(rune('0'+i)), "n": b64(r.N.Bytes()), "e": b64(big.NewInt(int64(r.E)).Bytes())},
			map[string]any{"kty": "EC", "kid": "e" + string(rune('0'+i)), "crv": "P-256", "x": b64(e.X.FillBytes(make([]byte, 32))), "y": b64(e.Y.FillBytes(make([]byte, 32)))})
	}
	raw, _ := json.Marshal(map[string]any{"keys": keys})
	path := filepath.Join(b.TempDir(), "jwks.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	a, err := NewAuthenticator(AuthConfig{JWKSFile: path}, nil)
	if err != nil {
		b.Fatal(err)
	}
	mint := func(m jwt.SigningMethod, key any, kid string) string {
		t := jwt.NewWithClaims(m, jwt.MapClaims{"subjects": []string{"*"}, "exp": time.Now().Add(time.Hour).Unix()})
		if kid != "" {
			t.Header["kid"] = kid
		}
		s, err := t.SignedString(key)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	for _, bc := range []struct {
		name, tok string
	}{
		{"RS256_kid", mint(jwt.SigningMethodRS256, rsaKeys[1], "r1")},
		{"ES256_kid", mint(jwt.SigningMethodES256, ecKeys[1], "e1")},
		{"ES256_no_kid", mint(jwt.SigningMethodES256, ecKeys[1], "")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Verify(bc.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
