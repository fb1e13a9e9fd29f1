package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

// AuthConfig is the `auth:` block of the configuration: where the keys that
// verify client JWTs come from. Exactly which algorithms are accepted
// follows from the keys: HS256 with the shared secret, RS256 with RSA public
// keys, ES256 with P-256 public keys; "none" never.
type AuthConfig struct {
	// HS256SecretFile holds the shared HS256 secret (at least 32 bytes;
	// surrounding whitespace is ignored).
	HS256SecretFile string `yaml:"jwt_hs256_secret_file"`
	// PublicKeys are PEM files of RSA or EC P-256 public keys (PUBLIC KEY,
	// RSA PUBLIC KEY or CERTIFICATE blocks, several per file allowed).
	PublicKeys []string `yaml:"jwt_public_keys"`
	// JWKSFile is a JSON Web Key Set file of RSA and EC P-256 keys; a
	// token's kid header picks the key. The file is read again when it
	// changes (checked at most once a second, as tokens arrive).
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURL is where an identity provider publishes its JSON Web Key Set
	// (Auth0, Keycloak, Cognito, Supabase...). It is fetched at start,
	// again every JWKSRefreshInterval, and when a token names a kid it
	// does not hold, at most once per JWKSMinRefreshInterval.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefreshInterval is how often the set at JWKSURL is fetched again,
	// so removed keys stop verifying. Zero means 1h.
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// JWKSMinRefreshInterval bounds the fetches an unknown kid causes, so
	// forged kids cannot hammer the identity provider. Zero means 1m.
	JWKSMinRefreshInterval time.Duration `yaml:"jwks_min_refresh_interval"`
	// Insecure turns authentication off: every request may read every
	// subject. Development only; the service logs a warning at start.
	Insecure bool `yaml:"insecure"`
	// Issuer, when set, must equal the token's iss.
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be among the token's aud.
	Audience string `yaml:"audience"`
	// Leeway is the clock skew tolerated on exp, nbf and iat. Zero means
	// none.
	Leeway time.Duration `yaml:"leeway"`
	// RequireExp refuses tokens without exp. Nil means true; false accepts
	// them (they never expire), an explicit opt-out.
	RequireExp *bool `yaml:"require_exp"`
	// AdminClaim names the boolean claim that must be true for GET
	// /v1/status, which shows the slot, PIDs and WAL figures. Empty means
	// "repstream_admin".
	AdminClaim string `yaml:"admin_claim"`
}

// DefaultAdminClaim is the claim that admits a token to /v1/status unless
// auth.admin_claim names another.
const DefaultAdminClaim = "repstream_admin"

func (c AuthConfig) requireExp() bool { return c.RequireExp == nil || *c.RequireExp }

func (c AuthConfig) adminClaim() string {
	if c.AdminClaim == "" {
		return DefaultAdminClaim
	}
	return c.AdminClaim
}

// Validate reports the first setting that cannot work, naming its key and
// the fix. It does not read the key files (NewAuthenticator does).
func (c AuthConfig) Validate() error {
	if c.Insecure {
		return nil
	}
	if c.HS256SecretFile == "" && len(c.PublicKeys) == 0 && c.JWKSFile == "" && c.JWKSURL == "" {
		return errors.New("auth: no key to verify tokens with: set auth.jwt_hs256_secret_file, auth.jwt_public_keys, auth.jwks_file or auth.jwks_url (or auth.insecure: true, for development only)")
	}
	if c.Leeway < 0 {
		return fmt.Errorf("auth.leeway: %s is negative; use 0 or a few seconds", c.Leeway)
	}
	if c.JWKSRefreshInterval < 0 {
		return fmt.Errorf("auth.jwks_refresh_interval: %s is negative; use 0 for 1h", c.JWKSRefreshInterval)
	}
	if c.JWKSMinRefreshInterval < 0 {
		return fmt.Errorf("auth.jwks_min_refresh_interval: %s is negative; use 0 for 1m", c.JWKSMinRefreshInterval)
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("auth.jwks_url: %q is not an http(s) URL; use the identity provider's JWKS address, e.g. https://idp.example.com/.well-known/jwks.json", c.JWKSURL)
		}
	}
	for i, p := range c.PublicKeys {
		if p == "" {
			return fmt.Errorf("auth.jwt_public_keys[%d]: empty path; remove it or name a PEM file", i)
		}
	}
	return nil
}

// Claims are the JWT claims repstream reads.
type Claims struct {
	jwt.RegisteredClaims
	// Subjects lists the subjects, or prefixes ending in "*", the bearer
	// may read ("*" is everything).
	Subjects []string `json:"subjects"`
	// Boards lists prefixes whose leaderboard (a subscribe with top) the
	// bearer may read without a grant of every subject under them: the
	// top N of all sellers for a token of one seller.
	Boards []string `json:"boards,omitempty"`
}

// Grant is what a verified token allows.
type Grant struct {
	// Expires is the token's exp; zero if it has none.
	Expires time.Time
	// Subjects are the exact subjects granted.
	Subjects map[string]bool
	// Prefixes are the granted prefixes (the claim's entries without "*").
	Prefixes []string
	// All grants everything (claim "*", or insecure mode).
	All bool
	// Admin admits the bearer to /v1/status (the auth.admin_claim claim is
	// true, or insecure mode).
	Admin bool
	// Boards are the prefixes of the boards claim: their leaderboards
	// are granted.
	Boards []string
}

// Allows reports whether the grant covers subject.
func (g *Grant) Allows(subject string) bool {
	if g.All || g.Subjects[subject] {
		return true
	}
	for _, p := range g.Prefixes {
		if strings.HasPrefix(subject, p) {
			return true
		}
	}
	return false
}

// AllowsPrefix reports whether the grant covers every subject starting
// with prefix.
func (g *Grant) AllowsPrefix(prefix string) bool {
	if g.All {
		return true
	}
	for _, p := range g.Prefixes {
		if strings.HasPrefix(prefix, p) {
			return true
		}
	}
	return false
}

// AllowsSelector reports whether the grant covers a selector, and if not,
// the first subject or prefix it does not cover.
func (g *Grant) AllowsSelector(sel stream.Selector) (bool, string) {
	if sel.Prefix != "" && !g.AllowsPrefix(sel.Prefix) {
		return false, sel.Prefix + "*"
	}
	for _, s := range sel.Subjects {
		if !g.Allows(s) {
			return false, s
		}
	}
	return true, ""
}

// AllowsBoard reports whether the grant covers the leaderboard of prefix:
// the whole prefix is granted, or the boards claim names it exactly.
func (g *Grant) AllowsBoard(prefix string) bool {
	return g.AllowsPrefix(prefix) || slices.Contains(g.Boards, prefix)
}

// allowsRequest checks a subscribe: a leaderboard (top or order given)
// against AllowsBoard, else its selector.
func (g *Grant) allowsRequest(m wire.ClientMessage) (bool, string) {
	if m.Top > 0 || m.Order != "" {
		if !g.AllowsBoard(m.Prefix) {
			return false, "leaderboard of " + m.Prefix + "*"
		}
		return true, ""
	}
	return g.AllowsSelector(stream.Selector{Subjects: m.Subjects, Prefix: m.Prefix})
}

// AuthError is a refused token. Reason is a short metric label.
type AuthError struct {
	Reason string
	Err    error
}

func (e *AuthError) Error() string { return "unauthenticated: " + e.Err.Error() }
func (e *AuthError) Unwrap() error { return e.Err }

// Authenticator verifies client JWTs. It is safe for concurrent use. Close
// it when done if it fetches a JWKS URL.
type Authenticator struct {
	cfg      AuthConfig
	secret   []byte
	rsaKeys  []keyed[*rsa.PublicKey]
	ecKeys   []keyed[*ecdsa.PublicKey]
	jwksFile *jwksFile
	jwksURL  keyfunc.Keyfunc
	stop     context.CancelFunc // ends the JWKS URL's refresh goroutine
	parser   *jwt.Parser
	now      func() time.Time
	logger   *slog.Logger
	insecure bool
}

type keyed[K any] struct {
	kid string
	key K
}

// NewAuthenticator loads the configured keys, fetching auth.jwks_url once.
// In insecure mode it logs a loud warning and every token, or none, is
// accepted.
func NewAuthenticator(cfg AuthConfig, logger *slog.Logger) (*Authenticator, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{cfg: cfg, now: time.Now, logger: logger, stop: func() {}}
	if cfg.Insecure {
		a.insecure = true
		logger.Warn("!!! auth.insecure is true: AUTHENTICATION IS OFF; anyone who reaches this service can read every subject. Development only. !!!")
		return a, nil
	}
	if cfg.HS256SecretFile != "" {
		b, err := os.ReadFile(cfg.HS256SecretFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt_hs256_secret_file: %w", err)
		}
		a.secret = []byte(strings.TrimSpace(string(b)))
		if len(a.secret) < 32 {
			return nil, fmt.Errorf("auth.jwt_hs256_secret_file: %s holds %d bytes; HS256 needs a secret of at least 32 (e.g. head -c 48 /dev/urandom | base64 > %s)", cfg.HS256SecretFile, len(a.secret), cfg.HS256SecretFile)
		}
	}
	for i, path := range cfg.PublicKeys {
		if err := a.loadPEM(path); err != nil {
			return nil, fmt.Errorf("auth.jwt_public_keys[%d]: %s: %w", i, path, err)
		}
	}
	var jwksAlgs []string
	if cfg.JWKSFile != "" {
		f, err := openJWKSFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwks_file: %s: %w", cfg.JWKSFile, err)
		}
		a.jwksFile = f
		jwksAlgs = append(jwksAlgs, f.algs...)
	}
	if cfg.JWKSURL != "" {
		ctx, cancel := context.WithCancel(context.Background())
		kf, algs, err := fetchJWKS(ctx, cfg, logger)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("auth.jwks_url: %s: %w", cfg.JWKSURL, err)
		}
		a.jwksURL, a.stop = kf, cancel
		jwksAlgs = append(jwksAlgs, algs...)
	}
	var methods []string
	if a.secret != nil {
		methods = append(methods, "HS256")
	}
	if len(a.rsaKeys) > 0 || slices.Contains(jwksAlgs, "RS256") || a.jwksURL != nil {
		methods = append(methods, "RS256")
	}
	if len(a.ecKeys) > 0 || slices.Contains(jwksAlgs, "ES256") || a.jwksURL != nil {
		methods = append(methods, "ES256")
	}
	if len(methods) == 0 {
		return nil, errors.New("auth: the configured files hold no usable key (RSA, EC P-256 or an HS256 secret)")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(cfg.Leeway), jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return a.now() })}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.requireExp() {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	a.parser = jwt.NewParser(opts...)
	logger.Info("auth: verifying JWTs", "algorithms", methods, "rsa_keys", len(a.rsaKeys), "ec_keys", len(a.ecKeys),
		"jwks_file", cfg.JWKSFile, "jwks_url", cfg.JWKSURL, "require_exp", cfg.requireExp(), "leeway", cfg.Leeway)
	return a, nil
}

// Close stops refreshing auth.jwks_url. The authenticator still verifies
// with the keys it holds.
func (a *Authenticator) Close() { a.stop() }

// Insecure reports whether authentication is off.
func (a *Authenticator) Insecure() bool { return a.insecure }

// tokenClaims reads Claims and, by its configured name, the admin claim.
type tokenClaims struct {
	Claims
	adminClaim string
	admin      bool
}

func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &c.Claims); err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(c.adminClaim)) {
		return nil // the common case: no need to decode the payload twice
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	c.admin = string(m[c.adminClaim]) == "true"
	return nil
}

// Verify checks a token and returns what it grants. Errors are *AuthError.
func (a *Authenticator) Verify(token string) (*Grant, error) {
	if a.insecure {
		return &Grant{All: true, Admin: true}, nil
	}
	if token == "" {
		return nil, &AuthError{Reason: "missing", Err: errors.New("no token")}
	}
	c := tokenClaims{adminClaim: a.cfg.adminClaim()}
	_, err := a.parser.ParseWithClaims(token, &c, a.keyFor)
	if err != nil {
		reason := "invalid"
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			reason = "expired"
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			reason = "no_exp"
			err = fmt.Errorf("%w (set auth.require_exp: false to accept tokens that never expire)", err)
		case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			reason = "issued_in_future"
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			reason = "not_yet_valid"
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			reason = "signature"
		case errors.Is(err, jwt.ErrTokenMalformed):
			reason = "malformed"
		case errors.Is(err, jwt.ErrTokenUnverifiable):
			reason = "unverifiable"
		}
		return nil, &AuthError{Reason: reason, Err: err}
	}
	g := &Grant{Admin: c.admin} // Subjects is made for the first exact subject: most grants have none
	if c.ExpiresAt != nil {
		g.Expires = c.ExpiresAt.Time
	}
	for _, p := range c.Boards {
		if p != "" {
			g.Boards = append(g.Boards, p)
		}
	}
	for _, s := range c.Subjects {
		switch {
		case s == "*":
			g.All = true
		case strings.HasSuffix(s, "*"):
			g.Prefixes = append(g.Prefixes, strings.TrimSuffix(s, "*"))
		case s != "":
			if g.Subjects == nil {
				g.Subjects = map[string]bool{}
			}
			g.Subjects[s] = true
		}
	}
	return g, nil
}

// keyFor picks the verification key by the token's algorithm (already
// restricted to the configured ones) and kid. The HS256 secret is only ever
// returned for HS256, and only keys of the algorithm's own type for RS256
// and ES256, so a token "signed" with a public key as an HMAC secret
// (algorithm confusion) fails.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	alg := t.Method.Alg()
	var set jwt.VerificationKeySet
	switch alg {
	case "HS256":
		if a.secret == nil {
			return nil, errors.New("HS256 is not configured")
		}
		return a.secret, nil
	case "RS256":
		set.Keys = pick(a.rsaKeys, kid)
	case "ES256":
		set.Keys = pick(a.ecKeys, kid)
	default:
		return nil, fmt.Errorf("algorithm %q is not accepted", alg)
	}
	var errs []error
	if a.jwksFile != nil {
		kf, err := a.jwksFile.current(a.logger)
		if err == nil {
			set.Keys, err = appendJWKS(set.Keys, kf, t, alg)
		}
		errs = append(errs, err)
	}
	if a.jwksURL != nil {
		var err error
		set.Keys, err = appendJWKS(set.Keys, a.jwksURL, t, alg)
		errs = append(errs, err)
	}
	switch len(set.Keys) {
	case 0:
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("no %s key with kid %q: %w", alg, kid, err)
		}
		return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

func pick[K any](keys []keyed[K], kid string) []jwt.VerificationKey {
	var out []jwt.VerificationKey
	for _, k := range keys {
		if kid == "" || k.kid == "" || k.kid == kid {
			out = append(out, k.key)
		}
	}
	return out
}

func (a *Authenticator) addKey(kid string, k any) error {
	if _, err := keyAlg(k); err != nil {
		return err
	}
	switch k := k.(type) {
	case *rsa.PublicKey:
		a.rsaKeys = append(a.rsaKeys, keyed[*rsa.PublicKey]{kid, k})
	case *ecdsa.PublicKey:
		a.ecKeys = append(a.ecKeys, keyed[*ecdsa.PublicKey]{kid, k})
	}
	return nil
}

func (a *Authenticator) loadPEM(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		var k any
		switch blk.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(blk.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(blk.Bytes); err == nil {
				k = cert.PublicKey
			}
		default:
			return fmt.Errorf("PEM block %q is not a public key (private keys do not belong here)", blk.Type)
		}
		if err != nil {
			return err
		}
		if err := a.addKey("", k); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM public key found")
	}
	return nil
}
