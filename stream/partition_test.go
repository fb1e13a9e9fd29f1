package stream_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/repstream/repstream/cdc/localpg"
	"github.com/repstream/repstream/stream"
	"github.com/repstream/repstream/stream/streamtest"
)

const partitioned = `CREATE TABLE items (id bigserial, at date NOT NULL, seller int, rating int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE items_2024 PARTITION OF items FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE items_2025 PARTITION OF items FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO items (at, seller, rating) SELECT date '2024-06-01' + i * 2, i % 4, 1 + i % 5 FROM generate_series(1, 200) i;`

// TestPartitionedSource: a partitioned table is published through its root
// (the auto-created publication, or a DBA's), subjects and keys come from
// the root, and partition TRUNCATE, ATTACH, DETACH and DROP stay exact.
func TestPartitionedSource(t *testing.T) {
	for _, dba := range []bool{false, true} {
		t.Run(map[bool]string{false: "auto publication", true: "dba publication"}[dba], func(t *testing.T) {
			url, name := localpg.NewDatabase(t)
			conn := streamtest.Connect(t, url)
			streamtest.Exec(t, conn, partitioned)
			if dba {
				streamtest.Exec(t, conn, `CREATE PUBLICATION "`+name+`" FOR TABLE items WITH (publish_via_partition_root = true)`)
			}
			e, stop := startEngine(t, url, name, &recorder{}, itemsSource)
			defer stop()
			waitItems(t, conn)
			streamtest.Exec(t, conn, `INSERT INTO items (at, seller, rating) VALUES ('2024-02-01', 1, 5), ('2025-02-01', 9, 1)`)
			streamtest.Exec(t, conn, `UPDATE items SET at = at + 365, rating = 2 WHERE id % 7 = 0 AND at < '2025-01-01'`) // moves partition
			streamtest.Exec(t, conn, `DELETE FROM items WHERE id % 11 = 0`)
			waitItems(t, conn)
			for _, step := range []string{
				`TRUNCATE items_2024`,
				`INSERT INTO items (at, seller, rating) VALUES ('2024-03-01', 2, 4)`,
				`CREATE TABLE items_2023 (LIKE items); INSERT INTO items_2023 (id, at, seller, rating) VALUES (100000, '2023-05-01', 3, 5), (100001, '2023-06-01', 1, 1);
				 ALTER TABLE items ATTACH PARTITION items_2023 FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')`,
				`UPDATE items SET rating = 3 WHERE id = 100000`,
				`ALTER TABLE items DETACH PARTITION items_2025`,
				`DROP TABLE items_2023`,
				`INSERT INTO items (at, seller, rating) VALUES ('2024-04-01', 3, 2)`,
			} {
				streamtest.Exec(t, conn, step)
				waitReady(t, e)
				waitItems(t, conn)
			}
		})
	}
}

// TestPartitionedNeedsViaRoot: a DBA's publication without
// publish_via_partition_root is refused at start with the fix.
func TestPartitionedNeedsViaRoot(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, partitioned)
	streamtest.Exec(t, conn, `CREATE PUBLICATION "`+name+`" FOR TABLE items`)
	cfg := stream.EngineConfig{DatabaseURL: url, Slot: name, Publication: name, CreatePublication: true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	itemsSource(&cfg)
	e, err := stream.NewEngine(context.Background(), cfg, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	err = e.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `SET (publish_via_partition_root = true)`) {
		t.Fatalf("got %v, want a refusal with the fix", err)
	}
	_ = time.Second
}

// TestPartitionTruncatedWhileStopped: a partition TRUNCATE leaves nothing in
// the stream; made while repstream is stopped, the next start reloads.
func TestPartitionTruncatedWhileStopped(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, partitioned)
	_, stop := startEngine(t, url, name, &recorder{}, itemsSource)
	waitItems(t, conn)
	stop()
	streamtest.Exec(t, conn, `TRUNCATE items_2024`)
	streamtest.Exec(t, conn, `INSERT INTO items (at, seller, rating) VALUES ('2024-03-01', 2, 4)`)
	rec := &recorder{}
	_, stop = startEngine(t, url, name, rec, itemsSource)
	defer stop()
	waitItems(t, conn)
}

// TestNewEmptyPartitionNeedsNoReload: a partition created ahead of time
// (empty) is taken on without a reload, now and at the next start; one
// attached with rows reloads.
func TestNewEmptyPartitionNeedsNoReload(t *testing.T) {
	url, name := localpg.NewDatabase(t)
	conn := streamtest.Connect(t, url)
	streamtest.Exec(t, conn, partitioned)
	rec := &recorder{}
	e, stop := startEngine(t, url, name, rec, itemsSource)
	waitItems(t, conn)
	streamtest.Exec(t, conn, `CREATE TABLE items_2026 PARTITION OF items FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`)
	time.Sleep(500 * time.Millisecond) // several schema checks
	streamtest.Exec(t, conn, `INSERT INTO items (at, seller, rating) VALUES ('2026-02-01', 1, 5), ('2026-03-01', 2, 2)`)
	waitItems(t, conn)
	waitReady(t, e)
	rec.mu.Lock()
	n := len(rec.resets)
	rec.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d resets after a new empty partition, want 1 (no reload)", n)
	}
	stop()
	rec2 := &recorder{}
	_, stop = startEngine(t, url, name, rec2, itemsSource)
	defer stop()
	waitItems(t, conn)
	rec2.mu.Lock()
	reloaded := len(rec2.resets) == 1 && rec2.resets[0].Epoch != rec.resets[0].Epoch
	rec2.mu.Unlock()
	if reloaded {
		t.Fatal("the restart reloaded for the new empty partition")
	}
}
