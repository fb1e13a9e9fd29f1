package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/repstream/repstream/cdc"
)

// shapeFingerprint identifies what the derived state was read through
// besides the configuration (see Fingerprint): each source table's OID (a
// table dropped and re-created under the same name is another table), its
// key columns, the publication's row filter for it, and the publication's
// publish_via_partition_root. When it changes, the stored state no longer
// follows from the stream and a new epoch starts.
func shapeFingerprint(ctx context.Context, q cdc.Querier, pubName string, tables []cdc.Table, keys map[string][]string, pub cdc.Publication) (string, error) {
	var viaRoot bool
	err := q.QueryRow(ctx, `SELECT coalesce((SELECT pubviaroot FROM pg_publication WHERE pubname = $1), false)`, pubName).Scan(&viaRoot)
	if err != nil {
		return "", fmt.Errorf("stream: read publication %s: %w", pubName, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "via_root=%v\n", viaRoot)
	for _, t := range tables {
		var oid uint32
		// From the catalog, which needs no privilege on the table's schema.
		err := q.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
			t.Schema, t.Name).Scan(&oid)
		if err != nil {
			return "", fmt.Errorf("stream: look up table %s: %w", t, err)
		}
		fmt.Fprintf(h, "%s|%d|%q|%q\n", t, oid, keys[t.String()], pub.Tables[t.String()].RowFilter)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
