package doctor

import (
	"context"
	"errors"
	"fmt"

	"github.com/repstream/repstream/stream"
)

// checkWhere checks each source's where values are values of their columns:
// serve refuses to start on one that is not, as it would match no row.
func (r *run) checkWhere(ctx context.Context) error {
	for i, rule := range r.rules {
		if i >= len(r.infos) || !r.infos[i].Exists || len(r.infos[i].missing) > 0 {
			continue // checkTables reported it
		}
		sfx := ":" + r.tables[i].String()
		err := stream.ResolveWhere(ctx, r.in.DatabaseURL, []*stream.Rule{rule})
		var ce *stream.ConfigError
		switch {
		case errors.As(err, &ce):
			r.add("config:"+ce.Key, Fail, fmt.Sprintf("config %s: %s", ce.Key, ce.Msg), "fix the key "+ce.Key+" in the configuration file")
		case err != nil:
			r.add("table.where"+sfx, Warn, fmt.Sprintf("could not check the where values of sources[%d]: %v", i, err), "run doctor again")
		}
	}
	return nil
}
