package api_test

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
)

// adminToken signs a token for subjects carrying the default admin claim.
func adminToken(t testing.TB, subjects ...string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "admin", "subjects": subjects, "exp": time.Now().Add(time.Hour).Unix(), api.DefaultAdminClaim: true,
	}).SignedString([]byte(apitest.Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStatusNeedsAdmin: /v1/status shows the slot, PIDs and WAL figures,
// so a token's subjects, even "*", do not open it; the admin claim does.
func TestStatusNeedsAdmin(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	for _, tc := range []struct {
		name   string
		token  string
		status int
		code   string
	}{
		{"every subject, no admin claim", apitest.Token(t, time.Hour, "*"), 403, "forbidden"},
		{"one subject, no admin claim", apitest.Token(t, time.Hour, "seller:1"), 403, "forbidden"},
		{"admin claim", adminToken(t), 200, ""},
		{"no token", "", 401, "unauthenticated"},
	} {
		status, body := get(t, e, "/v1/status", tc.token)
		if status != tc.status || (tc.code != "" && body["code"] != tc.code) {
			t.Errorf("%s: %d %v, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
		if status == 403 && body["message"] != `this endpoint needs a token with the claim "repstream_admin": true (auth.admin_claim)` {
			t.Errorf("%s: message %q does not say what is missing", tc.name, body["message"])
		}
		if status == 200 && body["slot"] != "mem" {
			t.Errorf("%s: body %v", tc.name, body)
		}
	}
}
