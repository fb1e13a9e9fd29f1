package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/repstream/repstream/api/client"
	"github.com/repstream/repstream/api/wire"
	"github.com/repstream/repstream/stream"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{
			Use:   "tail --url ws://host:8080/v1/stream (--subject S ... | --prefix P)",
			Short: "Follow subjects' reputation deltas in the terminal",
			Long: `tail subscribes to subjects (--subject, repeatable) or to every subject
with a prefix (--prefix) and prints one line per delta on stdout:

    0/16B3800 seller:42 v18 count 17→18 bayes 3.930→3.990 (+0.060)

States from a snapshot (the first subscribe, or after a reset) print as

    0/16B3748 seller:42 v17 count 17 bayes 3.930 mean 4.176 (snapshot)

With --json every line is a JSON object instead: the protocol's delta
message ({"type":"delta",...}), {"type":"state","state":{...}} for a
snapshot's state, or {"type":"reset","epoch":"..."}.

It reconnects with backoff and resumes from the greatest LSN it applied, so
no delta is missed or printed twice; when the server's history changes
(another epoch, or a cursor older than the retained log) it says so and
starts over from a snapshot. Connection events go to stderr. Ctrl-C exits 0.

With --top N (and --order bayes|mean|count) it follows the prefix's
leaderboard instead, kept by the server, and prints the whole top each time
it changes, with each rank change marked (↑ from 4, or new):

    0/16B3800 top 3 by bayes: 1 seller:42 3.990 ↑ from 2 | 2 seller:7 3.950 | 3 seller:9 3.900 new

The token comes from --token or $REPSTREAM_TOKEN; none is sent if both are
empty (a server with auth.insecure).`,
			Args: cobra.NoArgs,
		}
		var o tailOptions
		f := cmd.Flags()
		f.StringVar(&o.url, "url", "", "stream endpoint, ws[s]://host:port/v1/stream (http[s]:// and a bare host:port work too)")
		f.StringArrayVar(&o.subjects, "subject", nil, "subject to follow (repeatable)")
		f.StringVar(&o.prefix, "prefix", "", "follow every subject with this prefix, e.g. seller:")
		f.StringVar(&o.since, "since", "", "resume after this LSN (X/Y) instead of starting from a snapshot")
		f.StringVar(&o.epoch, "epoch", "", "the epoch --since belongs to; a cursor of another epoch starts over from a snapshot")
		f.StringVar(&o.token, "token", "", "JWT to present (default $REPSTREAM_TOKEN)")
		f.BoolVar(&o.proto, "proto", false, "use the protobuf subprotocol instead of JSON")
		f.DurationVar(&o.throttle, "throttle", 0, "ask the server to coalesce each subject's deltas to at most one per this interval (e.g. 500ms)")
		f.IntVar(&o.top, "top", 0, "follow the prefix's leaderboard of this many subjects instead of its deltas")
		f.StringVar(&o.order, "order", "bayes", "the leaderboard's order with --top: bayes, mean or count")
		f.BoolVar(&o.json, "json", false, "print JSON lines instead of text")
		f.BoolVarP(&o.verbose, "verbose", "v", false, "log the client's reconnects and their reasons")
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			if o.token == "" {
				o.token = os.Getenv("REPSTREAM_TOKEN")
			}
			return runTail(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		}
		return cmd
	})
}

type tailOptions struct {
	url      string
	subjects []string
	prefix   string
	since    string
	epoch    string
	token    string
	proto    bool
	throttle time.Duration
	top      int
	order    string
	json     bool
	verbose  bool
}

// runTail follows the subscription until ctx ends (nil) or the server
// refuses it for good (the error).
func runTail(ctx context.Context, stdout, stderr io.Writer, o tailOptions) error {
	u, err := streamURL(o.url)
	if err != nil {
		return err
	}
	if (len(o.subjects) == 0) == (o.prefix == "") {
		return errors.New("tail: give --subject (one or more) or --prefix, not both")
	}
	var since stream.LSN
	if o.since != "" {
		if since, err = stream.ParseLSN(o.since); err != nil {
			return fmt.Errorf("tail: --since: %w", err)
		}
	}
	if o.throttle < 0 {
		return errors.New("tail: --throttle must not be negative")
	}
	var order stream.Order
	if o.top != 0 {
		if o.top < 0 || o.prefix == "" {
			return errors.New("tail: --top needs --prefix and a positive number")
		}
		switch order = stream.Order(o.order); order {
		case stream.OrderBayes, stream.OrderMean, stream.OrderCount:
		default:
			return fmt.Errorf("tail: --order %q: use bayes, mean or count", o.order)
		}
	}
	lvl := slog.LevelWarn
	if o.verbose {
		lvl = slog.LevelDebug
	}
	p := &tailPrinter{out: stdout, json: o.json, order: order}
	var connects int
	opts := client.Options{
		URL: u, Handler: p, Subjects: o.subjects, Prefix: o.prefix,
		Throttle: o.throttle, Proto: o.proto, Epoch: o.epoch, Since: since, Top: o.top, Order: order,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
		// Trace runs on Run's goroutine before the message is applied.
		Trace: func(m wire.ServerMessage) {
			switch m.Type {
			case wire.TypeWelcome:
				connects++
				verb := "connected to"
				if connects > 1 {
					verb = "reconnected to"
				}
				fmt.Fprintf(stderr, "tail: %s %s (epoch %s, head %s, %s)\n", verb, u, m.Epoch, m.LSN, m.Server)
			case wire.TypeSubscribed:
				switch {
				case m.Reset:
					fmt.Fprintf(stderr, "tail: reset: the cursor is older than the server's retained log; starting over from a snapshot at %s\n", m.LSN)
				case m.Mode == "replay":
					fmt.Fprintf(stderr, "tail: subscribed; replaying up to %s, then live\n", m.LSN)
				case m.Mode == "board":
					fmt.Fprintf(stderr, "tail: subscribed to the leaderboard at %s\n", m.LSN)
				default:
					fmt.Fprintf(stderr, "tail: subscribed; snapshot at %s, then live\n", m.LSN)
				}
			case wire.TypeError:
				fmt.Fprintf(stderr, "tail: server error %s: %s\n", m.Code, m.Message)
			}
		},
	}
	// Always present a token, even an empty one: a server with
	// auth.insecure accepts the empty bearer at once, while without any
	// Authorization header it waits for a hello that api/client does not
	// send when Token is nil.
	tok := o.token
	opts.Token = func(context.Context) (string, error) { return tok, nil }
	c, err := client.New(opts)
	if err != nil {
		return err
	}
	p.stderr = stderr
	err = c.Run(ctx)
	if err == nil {
		epoch, cursor := c.Cursor()
		if cursor > 0 {
			fmt.Fprintf(stderr, "tail: stopped; resume with --since %s --epoch %s\n", cursor, epoch)
		}
	}
	return err
}

// streamURL accepts ws[s]:// URLs, http[s]:// ones (turned into ws[s]://)
// and a bare host:port; a URL without a path gets /v1/stream.
func streamURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("tail: --url is required, e.g. ws://127.0.0.1:8080/v1/stream")
	}
	if !strings.Contains(raw, "://") {
		raw = "ws://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("tail: --url: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("tail: --url: scheme %q; use ws:// or wss://", u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("tail: --url %q has no host", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/stream"
	}
	return u.String(), nil
}

// tailPrinter is the client's Handler: it prints what the client applies.
type tailPrinter struct {
	out    io.Writer
	stderr io.Writer
	json   bool
	order  stream.Order // of a leaderboard (--top)
}

func (p *tailPrinter) Reset(epoch string) {
	if p.json {
		p.line(map[string]string{"type": "reset", "epoch": epoch})
	}
	if p.stderr != nil {
		fmt.Fprintf(p.stderr, "tail: reset: epoch %s; dropping what was printed so far, a snapshot follows\n", epoch)
	}
}

func (p *tailPrinter) State(s stream.State) {
	if p.json {
		p.line(struct {
			Type  string       `json:"type"`
			State stream.State `json:"state"`
		}{"state", s})
		return
	}
	fmt.Fprintf(p.out, "%s %s v%d count %d bayes %.3f mean %.3f (snapshot)\n", s.LSN, s.Subject, s.Version, s.Count, s.Bayes, s.Mean)
}

func (p *tailPrinter) Delta(d stream.Delta) {
	if p.json {
		p.line(d)
		return
	}
	fmt.Fprintln(p.out, formatDelta(d))
}

// Board prints a leaderboard's top (client.BoardHandler).
func (p *tailPrinter) Board(lsn stream.LSN, entries []stream.State, moves []stream.Move) {
	if p.json {
		p.line(struct {
			Type    string         `json:"type"`
			LSN     string         `json:"lsn"`
			Entries []stream.State `json:"entries"`
			Moves   []stream.Move  `json:"moves"`
		}{"board", lsn.String(), entries, moves})
		return
	}
	fmt.Fprintln(p.out, formatBoard(lsn, p.order, entries, moves))
}

// formatBoard is a leaderboard's line: "0/16B3800 top 2 by bayes: 1
// seller:42 3.990 ↑ from 2 | 2 seller:7 3.950 ↓ from 1".
func formatBoard(lsn stream.LSN, order stream.Order, entries []stream.State, moves []stream.Move) string {
	from := make(map[string]stream.Move, len(moves))
	for _, m := range moves {
		from[m.Subject] = m
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s top %d by %s:", lsn, len(entries), order)
	for i, e := range entries {
		if i > 0 {
			b.WriteString(" |")
		}
		switch order {
		case stream.OrderCount:
			fmt.Fprintf(&b, " %d %s %d", i+1, e.Subject, e.Count)
		case stream.OrderMean:
			fmt.Fprintf(&b, " %d %s %.3f", i+1, e.Subject, e.Mean)
		default:
			fmt.Fprintf(&b, " %d %s %.3f", i+1, e.Subject, e.Bayes)
		}
		switch m, ok := from[e.Subject]; {
		case !ok:
		case m.From == 0:
			b.WriteString(" new")
		case m.From > i+1:
			fmt.Fprintf(&b, " ↑ from %d", m.From)
		default:
			fmt.Fprintf(&b, " ↓ from %d", m.From)
		}
	}
	return b.String()
}

func (p *tailPrinter) line(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintf(p.out, `{"type":"error","message":%q}`+"\n", err.Error())
		return
	}
	p.out.Write(append(b, '\n')) //nolint:errcheck // a closed stdout ends nothing but the output
}

// formatDelta is a delta's line:
// "0/16B3800 seller:42 v18 count 17→18 bayes 3.930→3.990 (+0.060)".
func formatDelta(d stream.Delta) string {
	a, c := d.After, d.Change
	s := fmt.Sprintf("%s %s v%d count %d→%d bayes %.3f→%.3f (%+.3f)",
		d.LSN, d.Subject, d.Version, a.Count-c.Count, a.Count, a.Bayes-c.Bayes, a.Bayes, c.Bayes)
	if d.Coalesced > 1 {
		s += fmt.Sprintf(" [%d coalesced]", d.Coalesced)
	}
	return s
}
