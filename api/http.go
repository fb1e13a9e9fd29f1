package api

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// subjectParam reads {subject}, unescaped exactly once. chi routes on
// URL.RawPath when the request has one (an escaped "/" as in "a%2Fb" makes
// net/http keep it) and on the already unescaped URL.Path otherwise (as for
// "a%2541", whose Path "a%41" must not be unescaped again).
func subjectParam(r *http.Request) (string, bool) {
	s := chi.URLParam(r, "subject")
	if r.URL.RawPath != "" {
		var err error
		if s, err = url.PathUnescape(s); err != nil {
			return "", false
		}
	}
	return s, s != ""
}

// limitParam reads ?limit=, with a default and the configured maximum.
func (s *Server) limitParam(w http.ResponseWriter, r *http.Request, def int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return min(def, s.cfg.MaxLimit), true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > s.cfg.MaxLimit {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "limit must be an integer from 1 to "+strconv.Itoa(s.cfg.MaxLimit))
		return 0, false
	}
	return n, true
}

func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "request timed out")
		return
	}
	s.logger.Error("api: store read failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, wire.CodeInternal, "the store is unavailable")
}

func (s *Server) forbidden(w http.ResponseWriter, what string) {
	s.m.authFailures.WithLabelValues("forbidden").Inc()
	writeError(w, http.StatusForbidden, wire.CodeForbidden, "the token does not cover "+what)
}

// pathSubject reads {subject} from the path and checks the token covers it;
// false means the error is answered.
func (s *Server) pathSubject(w http.ResponseWriter, r *http.Request) (string, bool) {
	subj, ok := subjectParam(r)
	if !ok {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "bad subject in path")
		return "", false
	}
	if !grantFrom(r.Context()).Allows(subj) {
		s.forbidden(w, subj)
		return "", false
	}
	return subj, true
}

// GET /v1/subjects/{subject}
func (s *Server) getSubject(w http.ResponseWriter, r *http.Request) {
	subj, ok := s.pathSubject(w, r)
	if !ok {
		return
	}
	st, err := s.log.State(r.Context(), subj)
	if errors.Is(err, stream.ErrNotFound) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no state for subject "+strconv.Quote(subj))
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

type listJSON struct {
	LSN   string `json:"lsn"`
	Items any    `json:"items"`
	More  *bool  `json:"more,omitempty"`
}

// boardAllowed tells whether a grant of prefix's leaderboard (the boards
// claim) covers a list request: what a leaderboard subscription could show,
// a ranking by bayes, mean or count of at most api.max_board_top.
func (s *Server) boardAllowed(g *Grant, prefix string, order stream.Order, limit int) bool {
	return slices.Contains(g.Boards, prefix) && order != stream.OrderUpdatedAt && limit <= s.hub.Config().MaxBoardTop
}

// GET /v1/subjects?prefix=&order=&limit=
func (s *Server) listSubjects(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	if prefix == "" {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "prefix is required, e.g. ?prefix=seller:")
		return
	}
	order := stream.Order(q.Get("order"))
	switch order {
	case "":
		order = stream.OrderBayes
	case stream.OrderBayes, stream.OrderMean, stream.OrderCount, stream.OrderUpdatedAt:
	default:
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "order must be one of bayes, mean, count, updated_at")
		return
	}
	limit, ok := s.limitParam(w, r, 50)
	if !ok {
		return
	}
	if g := grantFrom(r.Context()); !g.AllowsPrefix(prefix) && !s.boardAllowed(g, prefix, order, limit) {
		s.forbidden(w, "prefix "+strconv.Quote(prefix))
		return
	}
	sel := stream.Selector{Prefix: prefix}
	states, h, err := s.log.States(r.Context(), sel, order, limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if states == nil {
		states = []stream.State{}
	}
	writeJSON(w, http.StatusOK, listJSON{LSN: hub.Position(h).String(), Items: states})
}

// GET /v1/subjects/{subject}/deltas?since=&limit=
func (s *Server) getDeltas(w http.ResponseWriter, r *http.Request) {
	subj, ok := s.pathSubject(w, r)
	if !ok {
		return
	}
	limit, ok := s.limitParam(w, r, 1000)
	if !ok {
		return
	}
	var since stream.LSN
	sinceText := r.URL.Query().Get("since")
	if sinceText != "" {
		var err error
		if since, err = stream.ParseLSN(sinceText); err != nil {
			writeError(w, http.StatusBadRequest, wire.CodeBadCursor, err.Error())
			return
		}
	}
	gone := func(from stream.LSN) {
		writeError(w, http.StatusGone, wire.CodeBadCursor, "cursor "+since.String()+" is older than the retained log (from "+from.String()+"); read the subject's state instead")
	}
	var ds []stream.Delta
	var head stream.LSN
	// The page is read consistently with the log's start (ErrPruned): a
	// prune between the Meta and the read is a 410, never a gap. Without
	// a since, the start is read again and the page retried.
	for try := 0; ; try++ {
		m, err := s.log.Meta(r.Context())
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		if sinceText == "" {
			since = m.LogFrom
		}
		if since < m.LogFrom {
			gone(m.LogFrom)
			return
		}
		head = hub.Position(m.Checkpoint)
		if since > head {
			writeError(w, http.StatusBadRequest, wire.CodeBadCursor, "cursor "+since.String()+" is ahead of the server ("+head.String()+")")
			return
		}
		ds, err = s.log.Deltas(r.Context(), stream.Selector{Subjects: []string{subj}}, since, head, limit+1)
		if errors.Is(err, stream.ErrPruned) && (sinceText != "" || try >= 2) {
			gone(since)
			return
		}
		if errors.Is(err, stream.ErrPruned) {
			continue
		}
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		break
	}
	more := len(ds) > limit // one subject: one delta per transaction, so cutting never splits one
	if more {
		ds = ds[:limit]
	}
	if ds == nil {
		ds = []stream.Delta{}
	}
	writeJSON(w, http.StatusOK, listJSON{LSN: head.String(), Items: ds, More: &more})
}

// GET /v1/status
func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st := map[string]any{}
	if s.status != nil {
		got, err := s.status(r.Context())
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		for k, v := range got {
			st[k] = v
		}
	}
	if _, ok := st["epoch"]; !ok {
		st["epoch"] = s.hub.Epoch()
	}
	st["connections"] = s.hub.Connections()
	st["subscriptions"] = s.hub.Subscriptions()
	st["stream_lsn"] = s.hub.Head().String()
	if s.bus != nil {
		f := s.hub.FollowStatus()
		st["bus"] = map[string]any{"connected": f.BusUp, "polling_store": f.Following && !f.BusUp,
			"gaps_filled": f.Gaps, "store_errors": f.StoreErrs}
	}
	writeJSON(w, http.StatusOK, st)
}
