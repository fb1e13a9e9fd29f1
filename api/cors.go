package api

import (
	"net/http"
	"strings"

	"github.com/go-chi/cors"
)

// corsPolicy answers browsers on other origins by api.allowed_origins, the
// same list that admits their WebSockets: preflights (OPTIONS) are
// answered, and allowed origins may read the responses. Tokens travel in
// the Authorization header, never in cookies, so no credentials mode.
func (s *Server) corsPolicy() *cors.Cors {
	return cors.New(cors.Options{
		AllowOriginFunc: func(r *http.Request, _ string) bool { return s.originAllowed(r) },
		AllowedMethods:  []string{http.MethodGet, http.MethodHead},
		AllowedHeaders:  []string{"Authorization", "Content-Type"},
		MaxAge:          600,
	})
}

// CORS applies api.allowed_origins to h, for what a page on another
// origin loads besides the API: /repstream.js (an ES module is fetched in
// CORS mode) and /repstream.d.ts.
func (s *Server) CORS(h http.Handler) http.Handler { return s.cors.Handler(h) }

// corsREST applies the policy to the HTTP API under /v1/ (the WebSocket
// checks origins itself) ahead of routing, so a preflight is answered
// rather than refused as a method the route lacks.
func (s *Server) corsREST(next http.Handler) http.Handler {
	withCORS := s.cors.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/v1/stream" {
			withCORS.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
