package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
	"github.com/repstream/repstream/stream/streamtest"
)

// TestBoardPostgres runs the pipeline on a real Postgres with the
// randomized workload while a leaderboard client, holding a token for one
// seller and the boards claim, is dropped and resumes from its cursor. Once
// the workload stops and the store converged, its last board must equal
// SELECT ... FROM repstream.reputation WHERE subject LIKE 'seller:%' ORDER BY
// <order> DESC, subject LIMIT N, for each order.
func TestBoardPostgres(t *testing.T) {
	ctx := context.Background()
	url, conn, e, _ := startPipeline(t, api.Config{})

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "seller-7", "subjects": []string{"seller:7"},
		"boards": []string{"seller:"}, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(apitest.Secret))
	if err != nil {
		t.Fatal(err)
	}
	orders := map[int64]stream.Order{1: stream.OrderBayes, 2: stream.OrderMean, 3: stream.OrderCount}
	const top = 10
	last := map[int64]wire.ServerMessage{}
	fresh := map[int64]bool{} // a board came on this connection
	var ws *websocket.Conn
	read := func() (wire.ServerMessage, error) {
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			return wire.ServerMessage{}, err
		}
		return wire.JSON{}.DecodeServer(b)
	}
	send := func(m wire.ClientMessage) {
		b, _ := wire.JSON{}.EncodeClient(m)
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatal(err)
		}
	}
	// open connects and subscribes the three boards, from the last
	// board's cursor if there is one.
	open := func() {
		d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}}
		var err error
		ws, _, err = d.Dial(e.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		clear(fresh)
		send(wire.ClientMessage{Type: wire.TypeHello, Token: tok})
		for id, o := range orders {
			m := wire.ClientMessage{Type: wire.TypeSubscribe, ID: id, Prefix: "seller:", Top: top, Order: string(o)}
			if b, ok := last[id]; ok {
				m.Since, m.HasSince = b.LSN.String(), true
			}
			send(m)
		}
	}
	// take reads until a pong with id, keeping the last board of each
	// subscription and checking each is consistent with its lsn.
	take := func(pong int64) {
		for {
			m, err := read()
			if err != nil {
				t.Fatal(err)
			}
			switch m.Type {
			case wire.TypePong:
				if m.ID == pong {
					return
				}
			case wire.TypeError:
				t.Fatalf("error %+v", m)
			case wire.TypeBoard:
				if p, ok := last[m.ID]; ok && m.LSN < p.LSN {
					t.Fatalf("board %d went back from %s to %s", m.ID, p.LSN, m.LSN)
				}
				for _, s := range m.States {
					if s.LSN > m.LSN {
						t.Fatalf("board at %s holds %s at %s", m.LSN, s.Subject, s.LSN)
					}
				}
				last[m.ID], fresh[m.ID] = m, true
			}
		}
	}

	wconn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer wconn.Close(ctx)
	w := streamtest.NewWorkload(uint64(time.Now().UnixNano()))
	// check waits until the store converged and the hub published all of
	// it, then compares each board with SQL at that position.
	check := func(pong int64) {
		streamtest.WaitConverged(t, conn, 30*time.Second)
		// Every transaction is stored; the hub may not have published the
		// last ones yet.
		var head stream.LSN
		for {
			m, err := e.Store.Meta(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if e.Server.Hub().Head() >= hub.Position(m.Checkpoint) {
				head = e.Server.Hub().Head()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The hub moves its head before it fans a transaction out; Boards
		// waits for the fan-out (it takes the same lock), so the pong
		// comes after every board frame up to head.
		e.Server.Hub().Boards()
		send(wire.ClientMessage{Type: wire.TypePing, ID: pong})
		take(pong)
		for n := int64(1); len(fresh) < len(orders); n++ { // subscribes run apart from pings
			send(wire.ClientMessage{Type: wire.TypePing, ID: pong*1000 + n})
			take(pong*1000 + n)
		}
		for id, o := range orders {
			b := last[id]
			rows, err := conn.Query(ctx, `SELECT subject, count, bayes, mean, version, lsn FROM repstream.reputation
				WHERE subject LIKE 'seller:%' AND lsn <= $1 ORDER BY `+string(o)+` DESC, subject LIMIT $2`, head, top)
			if err != nil {
				t.Fatal(err)
			}
			want, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stream.State, error) {
				var s stream.State
				err := r.Scan(&s.Subject, &s.Count, &s.Bayes, &s.Mean, &s.Version, &s.LSN)
				return s, err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 || len(b.States) != len(want) {
				t.Fatalf("board %s: %d entries; SQL has %d", o, len(b.States), len(want))
			}
			for i, s := range b.States {
				x := want[i]
				if s.Subject != x.Subject || s.Count != x.Count || s.Bayes != x.Bayes || s.Mean != x.Mean || s.Version != x.Version {
					var cur stream.State
					_ = conn.QueryRow(ctx, `SELECT count, bayes, version, lsn FROM repstream.reputation WHERE subject = $1`, s.Subject).Scan(&cur.Count, &cur.Bayes, &cur.Version, &cur.LSN)
					t.Logf("check %d: board at %s, head %s; %s in SQL now: count %d bayes %v v%d at %s", pong, b.LSN, head, s.Subject, cur.Count, cur.Bayes, cur.Version, cur.LSN)
					t.Fatalf("board %s rank %d: %s count %d bayes %v mean %v v%d; SQL: %s count %d bayes %v mean %v v%d",
						o, i+1, s.Subject, s.Count, s.Bayes, s.Mean, s.Version, x.Subject, x.Count, x.Bayes, x.Mean, x.Version)
				}
			}
		}
	}
	open()
	for round := range 6 {
		until := time.Now().Add(400 * time.Millisecond)
		for time.Now().Before(until) {
			if err := w.Step(ctx, wconn); err != nil {
				t.Fatalf("workload: %v", err)
			}
		}
		if round%2 == 1 {
			check(int64(100 + round)) // the workload is paused: compare at this position
		} else {
			send(wire.ClientMessage{Type: wire.TypePing, ID: int64(100 + round)})
			take(int64(100 + round))
		}
		if round%2 == 0 { // drop; resume from the cursor
			ws.Close()
			open()
		}
	}
	check(999)
	ws.Close()
	t.Logf("workload: %v", w.Ops)
}
