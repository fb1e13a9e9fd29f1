package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "token", "--secret-file", secret, "--subjects", "seller:*,user:7", "--ttl", "5m").Output()
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(strings.TrimSpace(string(out)), claims, func(*jwt.Token) (any, error) {
		return []byte(strings.Repeat("ab", 32)), nil
	}, jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token does not verify with the secret file's trimmed bytes: %v", err)
	}
	subj, _ := claims["subjects"].([]any)
	if len(subj) != 2 || subj[0] != "seller:*" || subj[1] != "user:7" {
		t.Fatalf("subjects claim %v", claims["subjects"])
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if got := exp.Sub(iat.Time).Minutes(); got != 5 {
		t.Fatalf("token valid for %v minutes, want 5", got)
	}

	if _, ok := claims["repstream_admin"]; ok {
		t.Fatalf("a token without --admin carries the admin claim: %v", claims)
	}
	out, err = exec.Command(binary, "token", "--secret-file", secret, "--admin").Output()
	if err != nil {
		t.Fatal(err)
	}
	claims = jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(strings.TrimSpace(string(out)), claims, func(*jwt.Token) (any, error) {
		return []byte(strings.Repeat("ab", 32)), nil
	}, jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatal(err)
	}
	if claims["repstream_admin"] != true {
		t.Fatalf("--admin: claims %v, want repstream_admin: true", claims)
	}

	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tiny"), 0o600) //nolint:errcheck
	if out, err := exec.Command(binary, "token", "--secret-file", short).CombinedOutput(); err == nil || !strings.Contains(string(out), "shorter than 32 bytes") {
		t.Fatalf("a 4-byte secret was accepted or not explained: %v %s", err, out)
	}
}
