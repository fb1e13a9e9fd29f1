package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/repstream/repstream/stream"
)

func (e *env) pgBin(name string) string { return filepath.Join(e.cluster.BinDir, name) }

// walLSN is the server's current WAL write position.
func (e *env) walLSN(ctx context.Context) (stream.LSN, error) {
	var s string
	if err := e.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		return 0, err
	}
	return stream.ParseLSN(s)
}

// version is a subject's version in the store (0 if absent).
func (e *env) version(ctx context.Context, subject string) (int64, error) {
	var v int64
	err := e.pool.QueryRow(ctx, `SELECT coalesce((SELECT version FROM repstream.subjects WHERE subject = $1), 0)`, subject).Scan(&v)
	return v, err
}

// waitVersion polls until subject's version reaches want.
func (e *env) waitVersion(ctx context.Context, subject string, want int64, every, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		v, err := e.version(ctx, subject)
		if err != nil {
			return err
		}
		if v >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s at version %d, want %d, after %s", subject, v, want, within)
		}
		time.Sleep(every)
	}
}

// backlog commits rows reviews in transactions of perTx rows, quickly:
// one DO block with a COMMIT per transaction and synchronous_commit off
// (the WAL is the same as an application's). Sellers cycle over 1,000.
func (e *env) backlog(ctx context.Context, rows, perTx int) error {
	c, err := e.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return err
	}
	var q string
	if perTx == 1 {
		q = fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
  INSERT INTO reviews (seller_id, rating, status) VALUES (i %% 1000, 1 + i %% 5, 'published'); COMMIT;
END LOOP; END $$`, rows)
	} else {
		q = fmt.Sprintf(`DO $$ BEGIN FOR j IN 1..%d LOOP
  INSERT INTO reviews (seller_id, rating, status) SELECT i %% 1000, 1 + i %% 5, 'published' FROM generate_series(1, %d) i; COMMIT;
END LOOP; END $$`, rows/perTx, perTx)
	}
	_, err = c.Exec(ctx, q)
	return err
}

// pacer hands out sequence numbers at rate per second to workers, each
// with its own connection, until ctx ends or n numbers were handed out.
type pacer struct {
	Rate    float64
	Workers int
	N       int64 // 0: unlimited
	// Do runs one transaction for sequence number i on c.
	Do func(ctx context.Context, c *pgx.Conn, i int64) error

	done   atomic.Int64
	errors atomic.Int64
	behind atomic.Int64 // numbers handed out late by more than 5 ms
}

func (p *pacer) run(ctx context.Context, pool *pgxpool.Pool) error {
	ch := make(chan int64, 1024)
	var wg sync.WaitGroup
	for w := 0; w < p.Workers; w++ {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Release()
			for i := range ch {
				if err := p.Do(ctx, c.Conn(), i); err != nil {
					if ctx.Err() != nil {
						return
					}
					if p.errors.Add(1) < 5 {
						fmt.Fprintln(os.Stderr, "bench: writer:", err)
					}
					continue
				}
				p.done.Add(1)
			}
		}()
	}
	start := time.Now()
	interval := float64(time.Second) / p.Rate
loop:
	for i := int64(0); p.N == 0 || i < p.N; i++ {
		due := start.Add(time.Duration(float64(i) * interval))
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				break loop
			case <-time.After(d):
			}
		} else if d < -5*time.Millisecond {
			p.behind.Add(1)
		}
		select {
		case ch <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(ch)
	wg.Wait()
	return nil
}

// pgbenchInsert runs pgbench with single-row review INSERTs and returns tps.
func (e *env) pgbenchInsert(ctx context.Context, clients int, d time.Duration) (float64, error) {
	script := filepath.Join(e.dir, "insert.sql")
	if err := os.WriteFile(script, []byte("\\set s random(0, 999)\n\\set r random(1, 5)\nINSERT INTO reviews (seller_id, rating, status) VALUES (:s, :r, 'published');\n"), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, e.pgBin("pgbench"), "-n", "-M", "prepared", "-c", fmt.Sprint(clients), "-j", fmt.Sprint(min(clients, 2)),
		"-T", fmt.Sprint(int(d.Seconds())), "-f", script, "-h", "127.0.0.1", "-p", fmt.Sprint(e.cluster.Port), "-U", "postgres", "bench")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	var tps float64
	for _, l := range splitLines(string(out)) {
		if n, _ := fmt.Sscanf(l, "tps = %f (without initial connection time)", &tps); n == 1 {
			return tps, nil
		}
	}
	return 0, fmt.Errorf("pgbench: no tps in output:\n%s", out)
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}

func (e *env) createSlot(ctx context.Context, name string) error {
	_, err := e.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name)
	return err
}

func (e *env) dropSlot(ctx context.Context, name string) {
	for i := 0; i < 50; i++ {
		_, err := e.pool.Exec(ctx, `SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1`, name)
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recvlogical returns the pg_recvlogical command streaming slot from the
// publication the service created.
func (e *env) recvlogical(ctx context.Context, slot string, endpos stream.LSN) *exec.Cmd {
	args := []string{"-d", e.pgConn, "-S", slot, "--start", "--no-loop", "-o", "proto_version=1", "-o", "publication_names=repstream", "-f", "-"}
	if endpos > 0 {
		args = append(args, "-E", endpos.String())
	}
	return exec.CommandContext(ctx, e.pgBin("pg_recvlogical"), args...)
}
