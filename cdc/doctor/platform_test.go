package doctor_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/repstream/repstream/cdc/doctor"
)

// TestServerVersionMeaning: doctor names the server's version and what it
// means for column lists and failover.
func TestServerVersionMeaning(t *testing.T) {
	dbURL, _ := newDB(t)
	var num int
	queryRow(t, dbURL, `SELECT current_setting('server_version_num')::int`, &num)
	rep := doctor.Run(ctx(t), input(dbURL))
	want, text := doctor.OK, "failover slots can keep"
	switch {
	case num < 150000:
		want, text = doctor.Warn, "no column lists"
	case num < 170000:
		text = "failover slots need 17"
	}
	c := expect(t, rep, "server_version", want)
	if !strings.Contains(c.Message, fmt.Sprintf("PostgreSQL %d.", num/10000)) || !strings.Contains(c.Message, text) {
		t.Fatalf("server_version: %q, want the version and %q", c.Message, text)
	}
	if _, ok := rep.Find("platform"); ok {
		t.Fatalf("a plain Postgres reported as a platform:\n%s", text)
	}
}

// TestPlatformFixes: on a managed service (told by its own settings or
// schemas, set here per database) the role fix is given in its terms.
func TestPlatformFixes(t *testing.T) {
	for _, tc := range []struct {
		name, setup, platform, fix string
	}{
		{"rds", "ALTER DATABASE %s SET rds.logical_replication = 'on'", "Amazon RDS", "GRANT rds_replication TO"},
		{"cloudsql", "ALTER DATABASE %s SET cloudsql.logical_decoding = 'on'", "Cloud SQL", "cloudsqlsuperuser"},
		{"azure", "ALTER DATABASE %s SET azure.replication_support = 'logical'", "Azure", "azure_pg_admin"},
		{"neon", "ALTER DATABASE %s SET neon.timeline_id = 'x'", "Neon", "-pooler"},
		{"supabase", "CREATE SCHEMA supabase_functions -- %s", "Supabase", "not through the pooler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbURL, name := newDB(t)
			sqlExec(t, dbURL, fmt.Sprintf(tc.setup, `"`+name+`"`))
			role := newRole(t, dbURL, name, "GRANT SELECT ON public.reviews TO %s")
			rep := doctor.Run(ctx(t), input(asRole(dbURL, role)))
			c := expect(t, rep, "platform", doctor.OK)
			if !strings.Contains(c.Message, tc.platform) {
				t.Fatalf("platform: %q, want %s", c.Message, tc.platform)
			}
			c = expect(t, rep, "role.replication", doctor.Fail)
			if !strings.Contains(c.Fix, tc.fix) {
				t.Fatalf("role.replication fix %q, want it in %s's terms (%q)", c.Fix, tc.platform, tc.fix)
			}
		})
	}
}
