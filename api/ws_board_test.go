package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
)

// boardToken signs a token with a subjects and a boards claim.
func boardToken(t testing.TB, subjects, boards []string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "test", "subjects": subjects, "boards": boards,
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(apitest.Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sync makes sure every frame the server queued before now was read: a
// pong comes after them.
func (c *wsClient) sync(id int64) []wire.ServerMessage {
	c.t.Helper()
	c.send(wire.ClientMessage{Type: wire.TypePing, ID: id})
	var got []wire.ServerMessage
	for {
		m := c.next()
		if m.Type == wire.TypePong && m.ID == id {
			return got
		}
		got = append(got, m)
	}
}

// unsubscribed reads until the answer to unsubscribe id (requests run
// apart from pings, so a pong does not tell it is done).
func (c *wsClient) unsubscribed(id int64) {
	c.t.Helper()
	for {
		if m := c.next(); m.Type == wire.TypeUnsubscribed && m.ID == id {
			return
		}
	}
}

// checkMoves checks that a board's moves are exactly the rank changes from
// prev to next.
func checkMoves(t *testing.T, prev, next []stream.State, ms []stream.Move) {
	t.Helper()
	rank := func(ss []stream.State, subject string) int {
		for i := range ss {
			if ss[i].Subject == subject {
				return i + 1
			}
		}
		return 0
	}
	want := map[string]stream.Move{}
	for _, ss := range [][]stream.State{next, prev} {
		for _, s := range ss {
			if f, to := rank(prev, s.Subject), rank(next, s.Subject); f != to {
				want[s.Subject] = stream.Move{Subject: s.Subject, From: f, To: to}
			}
		}
	}
	if len(ms) != len(want) {
		t.Fatalf("moves %+v; want %+v", ms, want)
	}
	for _, m := range ms {
		if want[m.Subject] != m {
			t.Fatalf("move %+v; want %+v", m, want[m.Subject])
		}
	}
}

// sameStates compares a board's entries with the store's answer.
func sameStates(t *testing.T, what string, got, want []stream.State) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries; want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Subject != w.Subject || g.Version != w.Version || g.Count != w.Count || g.Bayes != w.Bayes || g.Mean != w.Mean || g.Sum != w.Sum {
			t.Fatalf("%s: rank %d is %+v; want %+v", what, i+1, g, w)
		}
	}
}

// httpTop asks GET /v1/subjects for the same ranking.
func httpTop(t *testing.T, e *apitest.Env, prefix string, order stream.Order, n int) []stream.State {
	t.Helper()
	req, _ := http.NewRequest("GET", e.Base+"/v1/subjects?prefix="+prefix+"&order="+string(order)+"&limit="+itoa(n), nil)
	req.Header.Set("Authorization", "Bearer "+apitest.Token(t, time.Hour, "*"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Items []stream.State `json:"items"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Items
}

// A leaderboard follows a randomized workload exactly: after each burst its
// entries equal the store's ORDER BY <order> DESC, subject LIMIT N (and the
// HTTP API's answer), and every board's moves are its rank changes.
func TestBoardMatchesStore(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		for range 50 {
			e.Write(hub.RandomOps(30)...)
		}
		c := connect(t, e, codec, "*")
		type board struct {
			order stream.Order
			top   int
			last  []stream.State
			lsn   stream.LSN
		}
		boards := map[int64]*board{1: {order: stream.OrderBayes, top: 5}, 2: {order: stream.OrderCount, top: 3}, 3: {order: stream.OrderMean, top: 10}}
		for id := int64(1); id <= 3; id++ {
			b := boards[id]
			c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: id, Prefix: "seller:", Top: int64(b.top), Order: string(b.order)})
			m := c.expect(wire.TypeSubscribed)
			if m.Mode != hub.ModeBoard || m.ID != id {
				t.Fatalf("subscribed %+v; want mode board, id %d", m, id)
			}
			f := c.expect(wire.TypeBoard)
			if f.ID != id || f.LSN != m.LSN || f.Order != string(b.order) {
				t.Fatalf("board %+v after subscribed at %s", f, m.LSN)
			}
			checkMoves(t, nil, f.States, f.Moves)
			b.last, b.lsn = f.States, f.LSN
		}
		frames := 0
		for round := range 20 {
			for range 10 {
				e.Write(hub.RandomOps(30)...)
			}
			for _, m := range c.sync(int64(1000 + round)) {
				if m.Type != wire.TypeBoard {
					continue // ticks
				}
				b := boards[m.ID]
				if m.LSN <= b.lsn {
					t.Fatalf("board %d at %s after one at %s", m.ID, m.LSN, b.lsn)
				}
				checkMoves(t, b.last, m.States, m.Moves)
				b.last, b.lsn = m.States, m.LSN
				frames++
			}
			for _, b := range boards {
				want, _, err := e.Store.States(context.Background(), stream.Selector{Prefix: "seller:"}, b.order, b.top)
				if err != nil {
					t.Fatal(err)
				}
				sameStates(t, "board "+string(b.order)+" vs store", b.last, want)
				sameStates(t, "board "+string(b.order)+" vs HTTP", b.last, httpTop(t, e, "seller:", b.order, b.top))
			}
		}
		if frames == 0 {
			t.Fatal("no board changed over 200 transactions")
		}
		if n := e.Server.Hub().Boards(); n != 3 {
			t.Fatalf("%d boards; want 3 (one per order)", n)
		}
		// A prefix subscription of the same prefix and its unsubscribe leave
		// the boards alone; an unsubscribe with top stops them.
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 8, Prefix: "seller:"})
		c.expect(wire.TypeSubscribed)
		for m := c.next(); m.Type != wire.TypeSnapshot || m.More; m = c.next() {
		}
		c.send(wire.ClientMessage{Type: wire.TypeUnsubscribe, ID: 9, Prefix: "seller:"})
		c.unsubscribed(9)
		if n := e.Server.Hub().Boards(); n != 3 {
			t.Fatalf("%d boards after the prefix's unsubscribe; want 3", n)
		}
		c.send(wire.ClientMessage{Type: wire.TypeUnsubscribe, ID: 10, Prefix: "seller:", Top: 1, Order: "count"})
		c.unsubscribed(10)
		if n := e.Server.Hub().Boards(); n != 2 {
			t.Fatalf("%d boards after the count board's unsubscribe; want 2", n)
		}
		c.send(wire.ClientMessage{Type: wire.TypeUnsubscribe, ID: 11, Prefix: "seller:", Top: 1})
		c.unsubscribed(11)
		if n := e.Server.Hub().Boards(); n != 0 {
			t.Fatalf("%d boards after every subscription left; want 0", n)
		}
	})
}

// A reconnect with a cursor gets the board as it is now: exact, whatever
// happened while the client was away.
func TestBoardReconnectSince(t *testing.T) {
	e := apitest.Start(t, api.Config{}, nil)
	for range 20 {
		e.Write(hub.RandomOps(20)...)
	}
	c := connect(t, e, wire.JSON{}, "*")
	c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:", Top: 4, Order: "bayes"})
	c.expect(wire.TypeSubscribed)
	first := c.expect(wire.TypeBoard)
	c.ws.Close()
	for range 30 {
		e.Write(hub.RandomOps(20)...)
	}
	c = connect(t, e, wire.JSON{}, "*")
	c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:", Top: 4, Order: "bayes",
		Since: first.LSN.String(), HasSince: true})
	m := c.expect(wire.TypeSubscribed)
	if m.Mode != hub.ModeBoard || m.LSN < first.LSN {
		t.Fatalf("subscribed %+v; want mode board at or after %s", m, first.LSN)
	}
	b := c.expect(wire.TypeBoard)
	want, _, _ := e.Store.States(context.Background(), stream.Selector{Prefix: "seller:"}, stream.OrderBayes, 4)
	sameStates(t, "board after reconnect", b.States, want)
	if b.LSN != e.Server.Hub().Head() {
		t.Fatalf("board at %s; want the hub's head %s", b.LSN, e.Server.Hub().Head())
	}
}

// A token for one seller may read the sellers' leaderboard when its boards
// claim names the prefix, and nothing more; without the claim the board is
// refused.
func TestBoardGrant(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		e.Write(hub.Op{Subject: "seller:1", Score: 4e6}, hub.Op{Subject: "seller:2", Score: 5e6})
		c := dial(t, e, codec, bearerHeader(boardToken(t, []string{"seller:1"}, []string{"seller:"})))
		c.expect(wire.TypeWelcome)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:", Top: 2, Order: "mean"})
		c.expect(wire.TypeSubscribed)
		b := c.expect(wire.TypeBoard)
		if len(b.States) != 2 || b.States[0].Subject != "seller:2" || b.States[1].Subject != "seller:1" {
			t.Fatalf("board %+v; want seller:2, seller:1", b.States)
		}
		// The claim grants the board, not the prefix's deltas.
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 2, Prefix: "seller:"})
		c.expectError(wire.CodeForbidden)
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 3, Prefix: "buyer:", Top: 2, Order: "mean"})
		c.expectError(wire.CodeForbidden)
		// seller:1 is one subject, not the prefix seller:1 (seller:10...).
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 4, Prefix: "seller:1", Top: 2, Order: "mean"})
		c.expectError(wire.CodeForbidden)

		d := connect(t, e, codec, "seller:1")
		d.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:", Top: 2, Order: "mean"})
		d.expectError(wire.CodeForbidden)
		if n := e.Server.Hub().Subscriptions(); n != 1 {
			t.Fatalf("%d subscriptions; want 1", n)
		}
	})
}

// A hello refresh whose token no longer grants the board stops it with
// error forbidden; one that still does keeps it.
func TestBoardRefreshNarrows(t *testing.T) {
	forCodecs(t, func(t *testing.T, codec wire.Codec) {
		e := apitest.Start(t, api.Config{}, nil)
		e.Write(hub.Op{Subject: "seller:1", Score: 4e6})
		c := connect(t, e, codec, "*")
		c.send(wire.ClientMessage{Type: wire.TypeSubscribe, ID: 1, Prefix: "seller:", Top: 3, Order: "bayes"})
		c.expect(wire.TypeSubscribed)
		c.expect(wire.TypeBoard)
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: boardToken(t, []string{"seller:1"}, []string{"seller:"})})
		e.Write(hub.Op{Subject: "seller:2", Score: 5e6})
		b := c.expect(wire.TypeBoard) // still granted by the boards claim
		if len(b.States) != 2 || len(b.Moves) != 2 {
			t.Fatalf("board %+v; want 2 entries, 2 moves", b)
		}
		c.send(wire.ClientMessage{Type: wire.TypeHello, Token: apitest.Token(t, time.Hour, "seller:1")})
		m := c.expect(wire.TypeError)
		if m.Code != wire.CodeForbidden || m.ID != 1 {
			t.Fatalf("error %+v; want forbidden for id 1", m)
		}
		e.Write(hub.Op{Subject: "seller:3", Score: 5e6})
		if got := c.sync(7); len(got) != 0 {
			t.Fatalf("after the refresh got %+v; want nothing", got)
		}
		if n := e.Server.Hub().Subscriptions(); n != 0 {
			t.Fatalf("%d subscriptions left; want 0", n)
		}
	})
}

// Bad leaderboard requests are answered bad_request and leave nothing.
func TestBoardBadRequests(t *testing.T) {
	e := apitest.Start(t, api.Config{MaxBoardTop: 10}, nil)
	c := connect(t, e, wire.JSON{}, "*")
	for i, m := range []wire.ClientMessage{
		{Prefix: "seller:", Top: 11, Order: "bayes"},
		{Prefix: "seller:", Top: 0, Order: "bayes"},
		{Prefix: "seller:", Top: 3, Order: "updated_at"},
		{Prefix: "seller:", Top: 3},
		{Prefix: "seller:", Top: -1, Order: "bayes"},
	} {
		m.Type, m.ID = wire.TypeSubscribe, int64(i+1)
		c.send(m)
		c.expectError(wire.CodeBadRequest)
	}
	c.sendRaw([]byte(`{"type":"subscribe","id":9,"subjects":["seller:1"],"top":3,"order":"bayes"}`))
	c.expectError(wire.CodeBadRequest)
	if n := e.Server.Hub().Subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions; want 0", n)
	}
}

// The boards claim also grants GET /v1/subjects for what a leaderboard
// could show: a ranking by bayes, mean or count, at most max_board_top
// long.
func TestBoardClaimHTTP(t *testing.T) {
	e := apitest.Start(t, api.Config{MaxBoardTop: 10}, nil)
	e.Write(hub.Op{Subject: "seller:1", Score: 4e6}, hub.Op{Subject: "seller:2", Score: 5e6})
	tok := boardToken(t, []string{"seller:1"}, []string{"seller:"})
	for _, tc := range []struct {
		query string
		code  int
	}{
		{"prefix=seller:&order=bayes&limit=10", 200},
		{"prefix=seller:&order=count&limit=2", 200},
		{"prefix=seller:&order=bayes&limit=11", 403},
		{"prefix=seller:&order=updated_at&limit=5", 403},
		{"prefix=buyer:&order=bayes&limit=5", 403},
		{"prefix=seller:1&order=bayes&limit=5", 403},
	} {
		req, _ := http.NewRequest("GET", e.Base+"/v1/subjects?"+tc.query, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.code {
			t.Errorf("%s: HTTP %d; want %d", tc.query, res.StatusCode, tc.code)
		}
	}
}

func TestMaxBoardTopConfig(t *testing.T) {
	err := api.Config{MaxBoardTop: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "api.max_board_top:") {
		t.Fatalf("got %v; want an error naming api.max_board_top", err)
	}
	if got := (api.Config{}).HubConfig().MaxBoardTop; got != 0 {
		t.Fatalf("HubConfig().MaxBoardTop %d; want 0 (the hub's default, 100)", got)
	}
	if got := (api.Config{MaxBoardTop: 7}).HubConfig().MaxBoardTop; got != 7 {
		t.Fatalf("HubConfig().MaxBoardTop %d; want 7", got)
	}
}
