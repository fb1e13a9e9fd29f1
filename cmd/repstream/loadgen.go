package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/repstream/repstream/sql/demo"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   "loadgen",
			Short: "Write reviews and ratings to the demo marketplace like a busy marketplace would",
			Long: `loadgen acts as the application repstream watches: it creates the demo
marketplace (sql/demo/schema.sql) if it is missing, then writes new reviews
and ratings, edits, deletions and moderation at --rate transactions a
second, with viral bursts on one seller and a story that drags another
seller's score down.`,
			Args: cobra.NoArgs,
		}
		f := cmd.Flags()
		dbURL := f.String("database-url", "", "Postgres URL of the marketplace (default $DATABASE_URL)")
		rate := f.Float64("rate", 200, "transactions of the mix per second; 0 writes as fast as one connection can")
		duration := f.Duration("duration", 0, "stop after this long; 0 runs until interrupted")
		txns := f.Int64("transactions", 0, "stop after this many transactions of the mix; 0 means no limit")
		seed := f.Uint64("seed", 1, "random seed: the same seed on the same database writes the same mix")
		mix := f.String("mix", demo.DefaultMix.String(), "relative weights of the kinds of change")
		batch := f.Int("batch", 5, "most changes in one transaction (half the transactions make one)")
		viralSeller := f.String("viral-seller", demo.DefaultViralSeller, "seller (handle, name or id) whose products go viral")
		viralEvery := f.Duration("viral-every", 30*time.Second, "how often a viral burst comes; 0 means never")
		viralBurst := f.Int("viral-burst", 100, "reviews one viral burst brings")
		story := f.Bool("story", true, "tell the story: late shipments and disputes drag a seller's score down")
		storySeller := f.String("story-seller", demo.DefaultStorySeller, "seller (handle, name or id) the story is about")
		storyAfter := f.Duration("story-after", 20*time.Second, "when the story starts")
		storyLength := f.Duration("story-length", time.Minute, "how long the story's bad reviews keep coming")
		schema := f.Bool("schema", true, "create and seed the demo schema if it is missing")
		schemaOnly := f.Bool("schema-only", false, "create and seed the demo schema if it is missing, then exit")
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			url := *dbURL
			if url == "" {
				url = os.Getenv("DATABASE_URL")
			}
			if url == "" {
				return errors.New("loadgen: no database: pass --database-url or set DATABASE_URL")
			}
			m, err := demo.ParseMix(*mix)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			if *schema || *schemaOnly {
				created, err := demo.Apply(ctx, url)
				if err != nil {
					return err
				}
				if created {
					log.Info("created the demo marketplace")
				}
			}
			if *schemaOnly {
				return nil
			}
			if *duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, *duration)
				defer cancel()
			}
			pcfg, err := pgxpool.ParseConfig(url)
			if err != nil {
				return fmt.Errorf("loadgen: --database-url: %w", err)
			}
			pcfg.ConnConfig.RuntimeParams["application_name"] = "repstream-loadgen"
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				return fmt.Errorf("loadgen: %w", err)
			}
			defer pool.Close()
			w := demo.NewWriter(pool, demo.WriterConfig{
				Rate: *rate, Transactions: *txns, Seed: *seed, Mix: m, MaxBatch: *batch,
				ViralSeller: *viralSeller, ViralEvery: *viralEvery, ViralBurst: *viralBurst,
				Story: *story, StorySeller: *storySeller, StoryAfter: *storyAfter, StoryLength: *storyLength,
				Logger: log,
			})
			start := time.Now()
			err = w.Run(ctx)
			s := w.Stats()
			fmt.Fprintf(cmd.OutOrStdout(), "loadgen: %d transactions in %s (%.1f/s): %d inserts, %d updates, %d deletes, %d hides; %d viral, %d story; %d errors\n",
				s.Transactions, time.Since(start).Round(time.Millisecond), float64(s.Transactions)/time.Since(start).Seconds(),
				s.Inserts, s.Updates, s.Deletes, s.Hides, s.Viral, s.Story, s.Errors)
			return err
		}
		return cmd
	})
}
