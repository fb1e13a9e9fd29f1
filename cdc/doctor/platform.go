package doctor

import (
	"context"
	"fmt"
	"strings"
)

// platform is the managed service doctor is talking to, told by the
// settings, roles and schemas only that service has; "" is plain Postgres.
type platform string

const (
	rds      platform = "Amazon RDS / Aurora"
	cloudSQL platform = "Google Cloud SQL"
	azure    platform = "Azure Database for PostgreSQL"
	supabase platform = "Supabase"
	neon     platform = "Neon"
)

// platformSettings are the services' own settings; current_setting sees
// them whether the server defines them or a database sets them.
var platformSettings = []string{"rds.logical_replication", "rds.extensions", "cloudsql.logical_decoding", "cloudsql.iam_authentication",
	"azure.replication_support", "azure.extensions", "neon.timeline_id", "neon.tenant_id"}

// detectPlatform looks for each service's own settings, roles and schemas.
func (r *run) detectPlatform(ctx context.Context) error {
	var settings, roles, schemas []string
	err := r.conn.QueryRow(ctx, `
SELECT coalesce(array(SELECT name FROM unnest($1::text[]) name WHERE current_setting(name, true) IS NOT NULL ORDER BY 1), '{}'),
       coalesce(array(SELECT rolname::text FROM pg_roles WHERE rolname IN ('rds_superuser', 'rds_replication', 'cloudsqlsuperuser', 'azure_pg_admin', 'supabase_admin', 'neon_superuser') ORDER BY 1), '{}'),
       coalesce(array(SELECT nspname::text FROM pg_namespace WHERE nspname IN ('supabase_functions', 'extensions', 'auth', 'storage') ORDER BY 1), '{}')`, platformSettings).
		Scan(&settings, &roles, &schemas)
	if err != nil {
		return fmt.Errorf("detect the platform: %w", err)
	}
	has := func(list []string, prefix string) bool {
		for _, s := range list {
			if strings.HasPrefix(s, prefix) {
				return true
			}
		}
		return false
	}
	switch {
	case has(settings, "rds.") || has(roles, "rds_"):
		r.platform = rds
	case has(settings, "cloudsql.") || has(roles, "cloudsqlsuperuser"):
		r.platform = cloudSQL
	case has(settings, "azure.") || has(roles, "azure_pg_admin"):
		r.platform = azure
	case has(settings, "neon.") || has(roles, "neon_superuser"):
		r.platform = neon
	case has(roles, "supabase_admin") || has(schemas, "supabase_functions"):
		r.platform = supabase
	}
	if r.platform != "" {
		r.add("platform", OK, fmt.Sprintf("this is %s: fixes below are given in its terms", r.platform), "")
	}
	return nil
}

// walLevelFix is how to turn logical decoding on for this platform.
func (r *run) walLevelFix() string {
	switch r.platform {
	case rds:
		return "set rds.logical_replication = 1 in the instance's DB parameter group (Aurora: the DB cluster parameter group), then reboot the instance; this sets wal_level = logical"
	case cloudSQL:
		return "gcloud sql instances patch INSTANCE --database-flags=cloudsql.logical_decoding=on (restarts the instance; keep the instance's other flags in the list)"
	case azure:
		return "Azure portal → Server parameters: wal_level = logical (Single Server: azure.replication_support = logical), save, then restart the server"
	case neon:
		return "Neon console → Project settings → Logical Replication → Enable (sets wal_level = logical; it cannot be turned off)"
	case supabase:
		return "Supabase runs with wal_level = logical; if this project does not, ask Supabase support"
	}
	return "ALTER SYSTEM SET wal_level = logical; -- then restart Postgres"
}

// replicationFixFor is the grant that lets role replicate here.
func (r *run) replicationFixFor(ri roleInfo) string {
	role := quoteIdent(ri.name)
	switch r.platform {
	case rds:
		return "GRANT rds_replication TO " + role + "; -- as the master user (Amazon RDS / Aurora); rds.logical_replication = 1 must be set too"
	case cloudSQL:
		return "ALTER ROLE " + role + " WITH REPLICATION; -- as a cloudsqlsuperuser member (Cloud SQL; also set the flag cloudsql.logical_decoding=on)"
	case azure:
		return "ALTER ROLE " + role + " REPLICATION; -- as a member of azure_pg_admin (Azure Database for PostgreSQL)"
	case neon:
		return "use the role created in the Neon console (neon_superuser members may replicate) or ALTER ROLE " + role + " REPLICATION; as one; connect to the direct endpoint, not the -pooler one"
	case supabase:
		return "connect as postgres (it has REPLICATION) on the direct connection (port 5432 of db.PROJECT.supabase.co), not through the pooler"
	}
	return ri.replicationFix()
}
