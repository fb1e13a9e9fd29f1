package streamtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/repstream/repstream/cdc/localpg"
)

// Failover is the topology of a primary failover: a primary whose database
// "app" holds Schema and seed rows, a physical standby made by a cold copy
// of its data directory, and a proxy in front of the primary that Switch
// moves to the promoted standby. The failover tests and the benchmark both
// run on it.
type Failover struct {
	Primary, Standby *localpg.Cluster
	Proxy            *Proxy
	// Version is the server's server_version_num.
	Version int
}

// StartFailover builds the topology with the servers of o.BinDir (empty:
// as localpg.Start). syncSlots configures failover slots (PostgreSQL 17+):
// sync_replication_slots and hot_standby_feedback on the standby,
// synchronized_standby_slots on the primary. Stop removes it.
func StartFailover(ctx context.Context, o localpg.Options, syncSlots bool) (_ *Failover, err error) {
	f := &Failover{}
	defer func() {
		if err != nil {
			f.Stop()
		}
	}()
	if f.Primary, err = localpg.Start(ctx, o); err != nil {
		return nil, err
	}
	if err := localpg.CreateDatabase(ctx, f.Primary.URL(""), "app"); err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, f.Primary.URL("app"))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, Schema); err != nil {
		return nil, fmt.Errorf("streamtest: schema: %w", err)
	}
	if err := Seed(ctx, conn, 500, 100); err != nil {
		return nil, fmt.Errorf("streamtest: seed: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&f.Version); err != nil {
		return nil, err
	}
	conn.Close(ctx) // the standby's cold copy stops the primary
	if f.Standby, err = f.Primary.NewFailoverStandby(ctx, "standby1", syncSlots); err != nil {
		return nil, err
	}
	if f.Proxy, err = StartProxy(f.Primary.Addr()); err != nil {
		return nil, err
	}
	return f, nil
}

// URL is database app through the proxy.
func (f *Failover) URL() string {
	u, _ := url.Parse(f.Primary.URL("app"))
	u.Host = f.Proxy.Addr()
	return u.String()
}

// Switch crashes the primary (immediate stop: no shutdown checkpoint, as a
// kill -9), promotes the standby and points the proxy at it, and says how
// long each of the three took.
func (f *Failover) Switch(ctx context.Context) (kill, promote, retarget time.Duration, err error) {
	t0 := time.Now()
	if err := f.Primary.Kill(ctx); err != nil {
		return 0, 0, 0, err
	}
	t1 := time.Now()
	if err := f.Standby.Promote(ctx); err != nil {
		return t1.Sub(t0), 0, 0, err
	}
	t2 := time.Now()
	f.Proxy.Retarget(f.Standby.Addr())
	return t1.Sub(t0), t2.Sub(t1), time.Since(t2), nil
}

// Stop closes the proxy and removes both clusters.
func (f *Failover) Stop() error {
	if f.Proxy != nil {
		f.Proxy.Close()
	}
	var errs []error
	for _, c := range []*localpg.Cluster{f.Standby, f.Primary} {
		if c != nil {
			errs = append(errs, c.Stop())
		}
	}
	return errors.Join(errs...)
}
