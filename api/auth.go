package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"

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
	// token's kid header picks the key.
	JWKSFile string `yaml:"jwks_file"`
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
	// RequireExp refuses tokens without exp. False accepts them (they never
	// expire).
	RequireExp bool `yaml:"require_exp"`
}

// Validate reports the first setting that cannot work, naming its key and
// the fix. It does not read the key files (NewAuthenticator does).
func (c AuthConfig) Validate() error {
	if c.Insecure {
		return nil
	}
	if c.HS256SecretFile == "" && len(c.PublicKeys) == 0 && c.JWKSFile == "" {
		return errors.New("auth: no key to verify tokens with: set auth.jwt_hs256_secret_file, auth.jwt_public_keys or auth.jwks_file (or auth.insecure: true, for development only)")
	}
	if c.Leeway < 0 {
		return fmt.Errorf("auth.leeway: %s is negative; use 0 or a few seconds", c.Leeway)
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

// Authenticator verifies client JWTs. It is safe for concurrent use.
type Authenticator struct {
	cfg      AuthConfig
	secret   []byte
	rsaKeys  []keyed[*rsa.PublicKey]
	ecKeys   []keyed[*ecdsa.PublicKey]
	parser   *jwt.Parser
	now      func() time.Time
	insecure bool
}

type keyed[K any] struct {
	kid string
	key K
}

// NewAuthenticator loads the configured keys. In insecure mode it logs a
// loud warning and every token, or none, is accepted.
func NewAuthenticator(cfg AuthConfig, logger *slog.Logger) (*Authenticator, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{cfg: cfg, now: time.Now}
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
	if cfg.JWKSFile != "" {
		if err := a.loadJWKS(cfg.JWKSFile); err != nil {
			return nil, fmt.Errorf("auth.jwks_file: %s: %w", cfg.JWKSFile, err)
		}
	}
	var methods []string
	if a.secret != nil {
		methods = append(methods, "HS256")
	}
	if len(a.rsaKeys) > 0 {
		methods = append(methods, "RS256")
	}
	if len(a.ecKeys) > 0 {
		methods = append(methods, "ES256")
	}
	if len(methods) == 0 {
		return nil, errors.New("auth: the configured files hold no usable key (RSA, EC P-256 or an HS256 secret)")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(func() time.Time { return a.now() })}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.RequireExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	a.parser = jwt.NewParser(opts...)
	logger.Info("auth: verifying JWTs", "algorithms", methods, "rsa_keys", len(a.rsaKeys), "ec_keys", len(a.ecKeys))
	return a, nil
}

// Insecure reports whether authentication is off.
func (a *Authenticator) Insecure() bool { return a.insecure }

// Verify checks a token and returns what it grants. Errors are *AuthError.
func (a *Authenticator) Verify(token string) (*Grant, error) {
	if a.insecure {
		return &Grant{All: true}, nil
	}
	if token == "" {
		return nil, &AuthError{Reason: "missing", Err: errors.New("no token")}
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, a.keyFor)
	if err != nil {
		reason := "invalid"
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			reason = "expired"
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			reason = "signature"
		case errors.Is(err, jwt.ErrTokenMalformed):
			reason = "malformed"
		case errors.Is(err, jwt.ErrTokenUnverifiable):
			reason = "unverifiable"
		}
		return nil, &AuthError{Reason: reason, Err: err}
	}
	g := &Grant{} // Subjects is made for the first exact subject: most grants have none
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
// returned for HS256, so a token "signed" with a public key as an HMAC
// secret (algorithm confusion) fails.
func (a *Authenticator) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	switch t.Method.Alg() {
	case "HS256":
		if a.secret == nil {
			return nil, errors.New("HS256 is not configured")
		}
		return a.secret, nil
	case "RS256":
		return pick(a.rsaKeys, kid)
	case "ES256":
		return pick(a.ecKeys, kid)
	}
	return nil, fmt.Errorf("algorithm %q is not accepted", t.Method.Alg())
}

func pick[K any](keys []keyed[K], kid string) (any, error) {
	var set jwt.VerificationKeySet
	for _, k := range keys {
		if kid == "" || k.kid == "" || k.kid == kid {
			set.Keys = append(set.Keys, k.key)
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, fmt.Errorf("no key with kid %q", kid)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

func (a *Authenticator) addKey(kid string, k any) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits; use at least 2048", k.N.BitLen())
		}
		a.rsaKeys = append(a.rsaKeys, keyed[*rsa.PublicKey]{kid, k})
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("EC key on %s; ES256 needs P-256", k.Curve.Params().Name)
		}
		a.ecKeys = append(a.ecKeys, keyed[*ecdsa.PublicKey]{kid, k})
	default:
		return fmt.Errorf("unsupported key type %T; use RSA or EC P-256", k)
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

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func (a *Authenticator) loadJWKS(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return fmt.Errorf("not a JWKS: %w", err)
	}
	n := 0
	for i, k := range set.Keys {
		if k.Use == "enc" {
			continue
		}
		key, err := k.publicKey()
		if err != nil {
			return fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		if key == nil {
			continue // a key type repstream does not use
		}
		if err := a.addKey(k.Kid, key); err != nil {
			return fmt.Errorf("key %d (kid %q): %w", i, k.Kid, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no RSA or EC P-256 signing key in the set")
	}
	return nil
}

func (k jwk) publicKey() (any, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch k.Kty {
	case "RSA":
		n, err := dec(k.N)
		if err != nil {
			return nil, fmt.Errorf("n: %w", err)
		}
		e, err := dec(k.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("e: not a small base64url integer")
		}
		ev := 0
		for _, c := range e {
			ev = ev<<8 | int(c)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, nil
		}
		x, err := dec(k.X)
		if err != nil {
			return nil, fmt.Errorf("x: %w", err)
		}
		y, err := dec(k.Y)
		if err != nil {
			return nil, fmt.Errorf("y: %w", err)
		}
		raw := append([]byte{4}, append(leftPad(x, 32), leftPad(y, 32)...)...)
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		if err != nil {
			return nil, err
		}
		return pk, nil
	}
	return nil, nil
}

func leftPad(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	return append(make([]byte, n-len(b)), b...)
}
