package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

const resumeSubject = "seller:700000"

// resume measures a client resuming 10,000 deltas behind on one subject,
// from the hub's ring and from the store.
func (e *env) resume(ctx context.Context) error {
	const behind = 10000
	if err := e.ensureService(ctx, "resume"); err != nil {
		return err
	}
	// A cursor: the subject's state as of now.
	v0, err := e.version(ctx, resumeSubject)
	if err != nil {
		return err
	}
	if _, err := e.pool.Exec(ctx, `INSERT INTO reviews (seller_id, rating, status) VALUES (700000, 3, 'published')`); err != nil {
		return err
	}
	if err := e.waitVersion(ctx, resumeSubject, v0+1, 5*time.Millisecond, time.Minute); err != nil {
		return err
	}
	var cursorText, epoch string
	if err := e.pool.QueryRow(ctx, `SELECT lsn::text, (SELECT epoch FROM repstream.meta) FROM repstream.subjects WHERE subject = $1`, resumeSubject).Scan(&cursorText, &epoch); err != nil {
		return err
	}
	cursor, _ := stream.ParseLSN(cursorText)
	c, err := e.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return err
	}
	if _, err := c.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
  INSERT INTO reviews (seller_id, rating, status) VALUES (700000, 1 + i %% 5, 'published'); COMMIT;
END LOOP; END $$`, behind)); err != nil {
		return err
	}
	if err := e.waitVersion(ctx, resumeSubject, v0+1+behind, 5*time.Millisecond, 5*time.Minute); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // published to the hub after the store commit
	runs := max(e.runs, 5)
	measure := func(label string) ([]float64, error) {
		var tooks []float64
		for i := 0; i < runs; i++ {
			t, n, err := resumeOnce(ctx, e.wsURL, epoch, cursor, behind)
			if err != nil {
				return nil, err
			}
			if n != behind {
				return nil, fmt.Errorf("resume (%s) got %d deltas, want %d", label, n, behind)
			}
			tooks = append(tooks, float64(t.Microseconds())/1000)
		}
		e.logf("  resume %d behind (%s): %v ms", behind, label, tooks)
		return tooks, nil
	}
	ring, err := measure("ring")
	if err != nil {
		return err
	}
	// From the store: the service without its in-memory ring.
	if err := e.stopService(); err != nil {
		return err
	}
	e.svcExtra = []string{"REPSTREAM_API__RING_DELTAS=-1"}
	err = e.ensureService(ctx, "resume-store")
	e.svcExtra = nil
	if err != nil {
		return err
	}
	store, err := measure("store")
	if err != nil {
		return err
	}
	if err := e.stopService(); err != nil {
		return err
	}
	if err := e.ensureService(ctx, "after-resume"); err != nil {
		return err
	}
	mr, ms := median(ring), median(store)
	e.add(row{Measurement: "resume a client 10,000 deltas behind (subscribe → 10,000th delta), from the in-memory ring",
		Baseline: "—", Result: fmt.Sprintf("%.1f ms", mr), Ratio: fmt.Sprintf("%.2f× of 50 ms", mr/50), Target: "≤ 50 ms",
		Verdict: verdict(mr <= 50)})
	e.add(row{Measurement: "resume a client 10,000 deltas behind, from the store (api.ring_deltas: -1)",
		Baseline: "—", Result: fmt.Sprintf("%.1f ms", ms), Ratio: fmt.Sprintf("%.2f× of 50 ms", ms/50), Target: "≤ 50 ms",
		Verdict: verdict(ms <= 50)})
	return nil
}

// resumeOnce connects, then times subscribe-with-cursor until want deltas
// of resumeSubject have arrived.
func resumeOnce(ctx context.Context, url, epoch string, cursor stream.LSN, want int) (time.Duration, int, error) {
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, url, map[string][]string{"Authorization": {"Bearer bench"}})
	if err != nil {
		return 0, 0, err
	}
	defer ws.Close()
	if err := expect(ws, wire.TypeWelcome); err != nil {
		return 0, 0, err
	}
	sub := wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Subjects: []string{resumeSubject}, Since: cursor.String(), HasSince: true, Epoch: epoch}
	b, _ := wire.JSON{}.EncodeClient(sub)
	_ = ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return 0, 0, err
	}
	n := 0
	for n < want {
		_, f, err := ws.ReadMessage()
		if err != nil {
			return 0, n, err
		}
		if len(f) > 20 && string(f[:20]) == `{"type":"subscribed"` {
			m, _ := wire.JSON{}.DecodeServer(f)
			if m.Mode != "replay" {
				return 0, 0, fmt.Errorf("resume answered with mode %q (reset %v), not replay", m.Mode, m.Reset)
			}
			continue
		}
		scanDeltas(f, func(subject string, lsn stream.LSN, _ time.Time) {
			if subject == resumeSubject && lsn > cursor {
				n++
			}
		})
	}
	return time.Since(start), n, nil
}
