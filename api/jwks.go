package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// jwksFileCheckEvery is how often, at most, a JWKS file is checked for
// changes (as tokens arrive: no goroutine watches it).
var jwksFileCheckEvery = time.Second

// jwksHTTPTimeout bounds each fetch of auth.jwks_url.
const jwksHTTPTimeout = 10 * time.Second

// useSig keeps keys marked for signatures, or for nothing in particular;
// encryption keys never verify a token.
var useSig = []jwkset.USE{jwkset.UseSig, ""}

// jwksFile is auth.jwks_file: the set it held when last read, read again
// when the file's size or modification time changes.
type jwksFile struct {
	path string
	algs []string // the algorithms its keys verify, from the first read

	mu      sync.Mutex
	kf      keyfunc.Keyfunc // guarded by mu
	mod     time.Time       // guarded by mu
	size    int64           // guarded by mu
	checked time.Time       // guarded by mu
}

func openJWKSFile(path string) (*jwksFile, error) {
	f := &jwksFile{path: path}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	kf, algs, err := readJWKSFile(path)
	if err != nil {
		return nil, err
	}
	f.kf, f.algs, f.mod, f.size, f.checked = kf, algs, fi.ModTime(), fi.Size(), time.Now()
	return f, nil
}

func readJWKSFile(path string) (keyfunc.Keyfunc, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	store, algs, err := parseJWKS(b)
	if err != nil {
		return nil, nil, err
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: store, UseWhitelist: useSig})
	return kf, algs, err
}

// current returns the file's keys, reading the file again if it changed.
// A file that changed into something unusable is logged and its last good
// keys kept, so a half-written file does not lock every client out.
func (f *jwksFile) current(logger *slog.Logger) (keyfunc.Keyfunc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if now.Sub(f.checked) < jwksFileCheckEvery {
		return f.kf, nil
	}
	f.checked = now
	fi, err := os.Stat(f.path)
	if err != nil {
		logger.Error("auth.jwks_file: cannot read it; keeping the keys read before", "path", f.path, "err", err)
		return f.kf, nil
	}
	if fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return f.kf, nil
	}
	kf, _, err := readJWKSFile(f.path)
	if err != nil {
		logger.Error("auth.jwks_file: changed but unusable; keeping the keys read before", "path", f.path, "err", err)
		return f.kf, nil
	}
	f.kf, f.mod, f.size = kf, fi.ModTime(), fi.Size()
	logger.Info("auth.jwks_file: read again", "path", f.path)
	return f.kf, nil
}

// parseJWKS reads a JSON Web Key Set, keeping the RSA and EC P-256 signing
// keys (others are skipped, as repstream's algorithms cannot use them).
func parseJWKS(b []byte) (*jwkset.MemoryJWKSet, []string, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, nil, fmt.Errorf("not a JWKS: %w", err)
	}
	var keys []jwkset.JWK
	var algs []string
	for i, m := range set.Keys {
		if m.USE == jwkset.UseEnc || !(m.KTY == jwkset.KtyRSA || m.KTY == jwkset.KtyEC && m.CRV == jwkset.CrvP256) {
			continue
		}
		k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("key %d (kid %q): %w", i, m.KID, err)
		}
		alg, err := keyAlg(k.Key())
		if err != nil {
			return nil, nil, fmt.Errorf("key %d (kid %q): %w", i, m.KID, err)
		}
		keys = append(keys, k)
		algs = append(algs, alg)
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("no RSA or EC P-256 signing key in the set")
	}
	store := jwkset.NewMemoryStorage()
	if err := store.KeyReplaceAll(context.Background(), keys); err != nil {
		return nil, nil, err
	}
	return store, algs, nil
}

// keyAlg is the algorithm a public key verifies, or why repstream refuses it.
func keyAlg(k any) (string, error) {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits; use at least 2048", k.N.BitLen())
		}
		return "RS256", nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key on %s; ES256 needs P-256", k.Curve.Params().Name)
		}
		return "ES256", nil
	}
	return "", fmt.Errorf("unsupported key type %T; use RSA or EC P-256", k)
}

// fetchJWKS fetches auth.jwks_url once and returns its keys, kept fresh by
// a goroutine that ends with ctx: fetched again every refresh interval
// (so revoked keys go), and when a token names an unknown kid, at most once
// per minimum interval (so new keys verify at once after a rotation).
func fetchJWKS(ctx context.Context, cfg AuthConfig, logger *slog.Logger) (keyfunc.Keyfunc, []string, error) {
	every := cfg.JWKSRefreshInterval
	if every == 0 {
		every = time.Hour
	}
	minEvery := cfg.JWKSMinRefreshInterval
	if minEvery == 0 {
		minEvery = time.Minute
	}
	remote, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:          &http.Client{Timeout: jwksHTTPTimeout},
		Ctx:             ctx,
		HTTPTimeout:     jwksHTTPTimeout,
		RefreshInterval: every,
		RefreshErrorHandler: func(_ context.Context, err error) {
			logger.Error("auth.jwks_url: fetch failed; keeping the keys fetched before", "url", cfg.JWKSURL, "err", err)
		},
	})
	if err != nil {
		return nil, nil, err
	}
	store, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{cfg.JWKSURL: remote},
		// An unknown kid waits for no token of the limiter: past the
		// bound it is refused at once, and the fetch itself gets as long.
		RateLimitWaitMax:  min(jwksHTTPTimeout, minEvery/2),
		RefreshUnknownKID: rate.NewLimiter(rate.Every(minEvery), 1),
	})
	if err != nil {
		return nil, nil, err
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: store, UseWhitelist: useSig})
	if err != nil {
		return nil, nil, err
	}
	all, err := store.KeyReadAll(ctx)
	if err != nil {
		return nil, nil, err
	}
	var algs []string
	for _, k := range all {
		if alg, err := keyAlg(k.Key()); err == nil {
			algs = append(algs, alg)
		}
	}
	if len(algs) == 0 {
		return nil, nil, errors.New("no RSA (2048 bits or more) or EC P-256 signing key in the set")
	}
	return kf, algs, nil
}

// appendJWKS appends to keys those of kf that t's kid names (or all, for a
// token without kid) and that verify alg.
func appendJWKS(keys []jwt.VerificationKey, kf keyfunc.Keyfunc, t *jwt.Token, alg string) ([]jwt.VerificationKey, error) {
	k, err := kf.Keyfunc(t)
	if err != nil {
		return keys, err
	}
	var found []jwt.VerificationKey
	switch k := k.(type) {
	case jwt.VerificationKeySet:
		found = k.Keys
	default:
		found = []jwt.VerificationKey{k}
	}
	for _, k := range found {
		if a, err := keyAlg(k); err == nil && a == alg {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
