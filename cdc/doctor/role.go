package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc"
)

// cloudRoles are the managed services' stand-ins for the REPLICATION
// attribute, which their customers' roles cannot always hold directly.
var cloudRoles = []string{"rds_replication", "azure_pg_admin", "cloudsqlsuperuser"}

// roleInfo is who doctor is connected as.
type roleInfo struct {
	name, database string
	super          bool
	replication    bool
	createOnDB     bool     // CREATE on the database: CREATE PUBLICATION, CREATE SCHEMA
	member         []string // cloudRoles this role is a member of
	present        []string // cloudRoles that exist on this server
	readAllStats   bool     // sees every session in pg_stat_activity
}

func (r *run) loadRole(ctx context.Context) error {
	ri := &r.role
	err := r.conn.QueryRow(ctx, `
SELECT current_user::text, current_database()::text, r.rolsuper, r.rolreplication,
       has_database_privilege(current_database(), 'CREATE'),
       coalesce(array(SELECT g.rolname::text FROM pg_roles g WHERE g.rolname = ANY($1) AND pg_has_role(current_user, g.oid, 'MEMBER') ORDER BY 1), '{}'),
       coalesce(array(SELECT g.rolname::text FROM pg_roles g WHERE g.rolname = ANY($1) ORDER BY 1), '{}'),
       r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
FROM pg_roles r WHERE r.rolname = current_user`, cloudRoles).Scan(
		&ri.name, &ri.database, &ri.super, &ri.replication, &ri.createOnDB, &ri.member, &ri.present, &ri.readAllStats)
	if err != nil {
		return fmt.Errorf("read the current role: %w", err)
	}
	return nil
}

// replicationVia says what lets the role replicate, or "" when nothing does.
func (ri roleInfo) replicationVia() string {
	switch {
	case ri.super:
		return "superuser"
	case ri.replication:
		return "REPLICATION attribute"
	case len(ri.member) > 0:
		return "member of " + strings.Join(ri.member, ", ")
	}
	return ""
}

// replicationFix is the grant that lets role replicate on this kind of server.
func (ri roleInfo) replicationFix() string {
	role := quoteIdent(ri.name)
	for _, p := range ri.present {
		switch p {
		case "rds_replication":
			return "GRANT rds_replication TO " + role + "; -- as the master user (Amazon RDS / Aurora)"
		case "azure_pg_admin":
			return "ALTER ROLE " + role + " REPLICATION; -- as a member of azure_pg_admin (Azure Database for PostgreSQL)"
		case "cloudsqlsuperuser":
			return "ALTER ROLE " + role + " WITH REPLICATION; -- as a cloudsqlsuperuser member (Cloud SQL; also set the flag cloudsql.logical_decoding=on)"
		}
	}
	return "ALTER ROLE " + role + " REPLICATION; -- as a superuser"
}

// connectReplication opens a walsender connection the way serve does, but
// under doctor's own application_name so it is never taken for the service.
func connectReplication(ctx context.Context, databaseURL string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "repstream doctor"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

// checkRole checks that the role may replicate, both by its attributes and by
// opening a replication connection and identifying the system, as serve will.
func (r *run) checkRole(ctx context.Context) error {
	ri := r.role
	via := ri.replicationVia()
	var connErr error
	if rc, err := connectReplication(ctx, r.in.DatabaseURL); err != nil {
		connErr = err
	} else {
		sys, err := cdc.IdentifySystem(ctx, rc)
		rc.Close(context.Background())
		if err != nil {
			connErr = err
		} else {
			r.sys = &sys
		}
	}
	var pg *pgconn.PgError
	denied := errors.As(connErr, &pg) && pg.Code == "42501"
	switch {
	case via != "":
		r.add("role.replication", OK, fmt.Sprintf("role %s can replicate (%s)", ri.name, via), "")
	case connErr == nil:
		r.add("role.replication", OK, fmt.Sprintf("role %s can replicate (the server accepted its replication connection)", ri.name), "")
	default:
		r.add("role.replication", Fail, fmt.Sprintf("role %s cannot replicate: it is not a superuser, has no REPLICATION attribute and is a member of none of %s",
			ri.name, strings.Join(cloudRoles, ", ")), r.replicationFixFor(ri))
	}
	switch {
	case connErr == nil:
		r.add("replication_connection", OK, fmt.Sprintf("replication connection works (system %s, timeline %d)", r.sys.ID, r.sys.Timeline), "")
	case denied && via == "":
		// role.replication already says why and how to fix it.
	default:
		r.add("replication_connection", Fail, fmt.Sprintf("replication connection to %s failed: %v", cdc.SafeURL(r.in.DatabaseURL), connErr), replicationConnFix(ri, connErr))
	}
	return nil
}

func replicationConnFix(ri roleInfo, err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "53300":
			return "ALTER SYSTEM SET max_wal_senders = 10; -- then restart Postgres (or end an unused replication connection)"
		case "28000":
			return fmt.Sprintf("add a pg_hba.conf line for logical replication, which matches the database name: `host %s %s <client address>/32 scram-sha-256`, then SELECT pg_reload_conf();", ri.database, ri.name)
		case "42501":
			return ri.replicationFix()
		}
	}
	return "see the error above; serve opens the same kind of connection (replication=database)"
}
