package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/repstream/repstream/api"
	"github.com/repstream/repstream/api/apitest"
	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/hub"
	"github.com/repstream/repstream/stream/streamtest"
)

func TestMain(m *testing.M) {
	code := localpg.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestExactCatchUpPostgres runs the pipeline on a real Postgres with the
// randomized workload (inserts, moves, filter flips, TOAST, deletes,
// rollbacks) while a prefix client is dropped at random moments; its fold
// must equal the store subject by subject. The ring is kept small so
// replays also come from the delta log.
func TestExactCatchUpPostgres(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ring  int
		proto bool
	}{
		{"ring", 0, false},
		{"log", 32, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			url, conn, e, engine := startPipeline(t, api.Config{RingDeltas: tc.ring})

			wconn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer wconn.Close(ctx)
			w := streamtest.NewWorkload(uint64(time.Now().UnixNano()))
			writer := func(wctx context.Context) func() {
				stop := make(chan struct{})
				go func() {
					defer close(stop)
					for wctx.Err() == nil {
						if err := w.Step(wctx, wconn); err != nil && wctx.Err() == nil {
							t.Errorf("workload: %v", err)
							return
						}
					}
				}()
				return func() {
					<-stop
					streamtest.WaitConverged(t, conn, 30*time.Second)
				}
			}
			apitest.RunExactCatchUp(t, e, engine.Store(), tc.proto, writer)
			t.Logf("workload: %v", w.Ops)
		})
	}
}

// startPipeline seeds a database of its own, replicates it with an engine
// and serves that engine's hub with an API server of cfg; both stop when
// the test ends. It returns the database, a connection to it, the API and
// the engine.
func startPipeline(t *testing.T, cfg api.Config) (string, *pgx.Conn, *apitest.Env, *stream.Engine) {
	t.Helper()
	url, name := localpg.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	streamtest.Exec(t, conn, streamtest.Schema)
	if err := streamtest.Seed(ctx, conn, 200, 50); err != nil {
		t.Fatal(err)
	}
	var pub hub.Forward
	ectx, ecancel := context.WithCancel(ctx)
	engine, err := stream.NewEngine(ectx, stream.EngineConfig{
		DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Sources: streamtest.Sources(), Prior: stream.Prior{Mean: 3.5, Weight: 10},
		Heartbeat: 200 * time.Millisecond, StatusInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, &pub)
	if err != nil {
		ecancel()
		t.Fatal(err)
	}
	if err := engine.Migrate(); err != nil {
		ecancel()
		t.Fatal(err)
	}
	e := apitest.StartLog(t, cfg, nil, engine.Store())
	pub.Set(e.Server.Hub())
	done := make(chan error, 1)
	go func() { done <- engine.Run(ectx) }()
	t.Cleanup(func() {
		ecancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		engine.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for engine.Readiness(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("engine not ready after 30s: %v", engine.Readiness(context.Background()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url, conn, e, engine
}
