package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/repstream/repstream/api/wire"
)

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(s.corsREST)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "not ready: "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
	})
	r.Handle("/metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{}))
	// The WebSocket lives outside the REST group: no request timeout.
	r.Get("/v1/stream", s.serveWS)
	r.Group(func(r chi.Router) {
		r.Use(middleware.Timeout(s.cfg.HTTPTimeout))
		r.Use(s.countHTTP)
		r.Use(s.authenticate)
		r.With(s.requireAdmin).Get("/v1/status", s.getStatus)
		r.Group(func(r chi.Router) {
			r.Use(s.requireStore)
			r.Get("/v1/subjects", s.listSubjects)
			r.Get("/v1/subjects/{subject}", s.getSubject)
			r.Get("/v1/subjects/{subject}/deltas", s.getDeltas)
		})
	})
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, wire.CodeBadRequest, "method not allowed")
	})
	return r
}

type grantKey struct{}

// grantFrom returns the request's grant, or nil.
func grantFrom(ctx context.Context) *Grant {
	g, _ := ctx.Value(grantKey{}).(*Grant)
	return g
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// authenticate requires a valid bearer token (unless auth is insecure) and
// puts its grant in the request context.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := bearer(r)
		g, err := s.auth.Verify(tok)
		if err != nil {
			s.m.authFailures.WithLabelValues(err.(*AuthError).Reason).Inc()
			writeError(w, http.StatusUnauthorized, wire.CodeUnauthenticated, err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), grantKey{}, g)))
	})
}

// requireAdmin admits only grants carrying the admin claim: /v1/status
// shows the slot, PIDs and WAL figures and queries the database per call.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !grantFrom(r.Context()).Admin {
			s.m.authFailures.WithLabelValues("not_admin").Inc()
			writeError(w, http.StatusForbidden, wire.CodeForbidden,
				"this endpoint needs a token with the claim "+strconv.Quote(s.auth.cfg.adminClaim())+": true (auth.admin_claim)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) countHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		s.m.http.WithLabelValues(route, strconv.Itoa(ww.Status())).Inc()
	})
}
