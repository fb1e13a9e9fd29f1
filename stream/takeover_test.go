package stream

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/repstream/repstream/cdc"
	"github.com/repstream/repstream/cdc/localpg"
)

// TestSilentHolderHiddenFromTheStandbysRole: a standby whose role lacks
// pg_read_all_stats cannot tell a stopped slot holder from a busy one, so
// bus.takeover_after cannot work; it says so once, with the grant that
// fixes it, instead of silently waiting for wal_sender_timeout. A role that
// sees the walsender measures its silence.
func TestSilentHolderHiddenFromTheStandbysRole(t *testing.T) {
	ctx := context.Background()
	dbURL, _ := localpg.NewDatabase(t)
	super, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close()
	role := fmt.Sprintf("peek_%d", time.Now().UnixNano())
	if _, err := super.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN`, pgx.Identifier{role}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), localpg.AdminURL())
		if err == nil {
			_, err = c.Exec(context.Background(), fmt.Sprintf(`DROP ROLE %s`, pgx.Identifier{role}.Sanitize()))
			c.Close(context.Background())
		}
		if err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})

	// The holder: a replication connection of the superuser's, as another
	// node's (serve's own connect).
	repl, err := cdc.ConnectReplication(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(ctx)
	pid, app := int32(repl.PID()), repl.ParameterStatus("application_name")

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	peek, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer peek.Close()
	// It has not answered any replication yet: visible, no silence.
	if silent, visible, err := holderSilence(ctx, super, pid); err != nil || !visible || silent != 0 {
		t.Fatalf("as the holder's role: silent %v, visible %v, err %v; want visible, 0", silent, visible, err)
	}
	if _, visible, err := holderSilence(ctx, peek, pid); err != nil || visible {
		t.Fatalf("as a role without pg_read_all_stats: visible %v, err %v; want hidden", visible, err)
	}

	var out bytes.Buffer
	e := &Engine{cfg: EngineConfig{TakeoverAfter: time.Second}, log: slog.New(slog.NewTextHandler(&out, nil)), pool: peek}
	e.endSilentHolder(ctx, pid, app, "holder")
	e.endSilentHolder(ctx, pid, app, "holder")
	logged := out.String()
	if n := strings.Count(logged, "pg_read_all_stats"); n != 1 {
		t.Errorf("the hidden holder was named %d times, want once:\n%s", n, logged)
	}
	if !strings.Contains(logged, "level=WARN") || !strings.Contains(logged, "wal_sender_timeout") {
		t.Errorf("want a warning naming wal_sender_timeout:\n%s", logged)
	}
	// Nothing was ended: the holder's walsender still answers.
	if err := repl.Exec(ctx, "IDENTIFY_SYSTEM").Close(); err != nil {
		t.Errorf("the holder's connection was ended: %v", err)
	}
	// A holder that is gone is no silence to end, whoever asks.
	repl.Close(ctx)
	for _, p := range []*pgxpool.Pool{super, peek} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			silent, visible, err := holderSilence(ctx, p, pid)
			if err != nil {
				t.Fatal(err)
			}
			if visible && silent == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a closed holder: silent %v, visible %v; want visible, 0", silent, visible)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
