// Package demo is the demo marketplace behind `repstream dev`, `repstream
// loadgen` and docker-compose.yml: an application that existed before
// repstream (schema.sql), the sources that map its tables to subjects, and
// a Writer that changes it the way a busy marketplace would.
package demo

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/stream"
)

// Schema creates and seeds the marketplace in one transaction (it has its
// own BEGIN and COMMIT, so psql -f runs it as is).
//
//go:embed schema.sql
var Schema string

// ComposeConfig is repstream's configuration for docker-compose.yml
// (compose.yaml): the same sources and prior as Sources and Prior.
//
//go:embed compose.yaml
var ComposeConfig []byte

// DatabaseName is the database `repstream dev` and docker-compose.yml keep the marketplace in.
const DatabaseName = "marketplace"

// The sellers the Writer's bursts and story are about unless told otherwise.
const (
	DefaultViralSeller = "pixel-and-pine"       // Pixel & Pine
	DefaultStorySeller = "harbor-lane-ceramics" // Harbor Lane Ceramics
)

// Sources maps the marketplace to subjects: published reviews rate sellers
// ("seller:{seller_id}", 1 to 5 stars) and users rate each other
// ("user:{user_id}", 0 to 10). Each call returns a fresh slice.
func Sources() []stream.Source {
	return []stream.Source{
		{
			Table:   "public.reviews",
			Subject: "seller:{seller_id}",
			Score:   "rating",
			Scale:   []float64{1, 5},
			Where:   map[string]any{"status": "published"},
		},
		{
			Table:   "public.ratings",
			Subject: "user:{user_id}",
			Score:   "score",
			Scale:   []float64{0, 10},
		},
	}
}

// Prior is the demo's Bayesian prior: ten ratings' worth of 3.5.
func Prior() stream.Prior { return stream.Prior{Mean: 3.5, Weight: 10} }

// schemaLock is the advisory lock key that serializes Apply across processes.
const schemaLock = 0x7265_7073_6465_6d6f // "repsdemo"

// Apply creates and seeds the marketplace in the database at databaseURL
// unless its tables already exist. It reports whether it created them.
// Concurrent calls are safe: an advisory lock lets one of them create it.
func Apply(ctx context.Context, databaseURL string) (created bool, err error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return false, fmt.Errorf("demo: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(schemaLock)); err != nil {
		return false, fmt.Errorf("demo: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(schemaLock)) //nolint:errcheck // closing the session unlocks too
	var exists bool
	err = conn.QueryRow(ctx, "SELECT to_regclass('public.reviews') IS NOT NULL AND to_regclass('public.ratings') IS NOT NULL").Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("demo: look for the schema: %w", err)
	}
	if exists {
		return false, nil
	}
	// No arguments: the simple protocol runs the whole script, transaction and all.
	if _, err := conn.Exec(ctx, Schema); err != nil {
		conn.Exec(context.WithoutCancel(ctx), "ROLLBACK") //nolint:errcheck // the script's own transaction, if it failed half-way
		return false, fmt.Errorf("demo: create the schema: %w", err)
	}
	return true, nil
}
