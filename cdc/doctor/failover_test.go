package doctor_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/repstream/repstream/cdc/doctor"
)

// TestFailoverSlotFlag: on 17+ a slot without failover = true is a warning
// naming the command that sets it; with it, ok. Before 17 there is nothing
// to check (server_version says a promotion loses the slot).
func TestFailoverSlotFlag(t *testing.T) {
	for _, failover := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[failover], func(t *testing.T) { checkFailoverFlag(t, failover) })
	}
}

func checkFailoverFlag(t *testing.T, failover bool) {
	{
		dbURL, _ := newDB(t)
		v := serverVersion(t, dbURL)
		create := `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`
		if v >= 170000 && failover {
			create = `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput', false, false, true)`
		}
		sqlExec(t, dbURL, pubDDL(t, dbURL), create)
		rep := doctor.Run(ctx(t), input(dbURL))
		st, err := doctor.ReadSlot(ctx(t), input(dbURL))
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		if err := st.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		switch {
		case v < 170000 && (st.Failover != nil || strings.Contains(text.String(), "\nfailover ")):
			t.Fatalf("slot status shows failover on %d: %s", v, text.String())
		case v >= 170000 && (st.Failover == nil || *st.Failover != failover || !strings.Contains(text.String(), fmt.Sprintf("failover             %v", failover))):
			t.Fatalf("slot status: failover %v, want %v:\n%s", st.Failover, failover, text.String())
		}
		if v < 170000 {
			if _, ok := rep.Find("failover.slot"); ok {
				t.Fatalf("failover.slot checked on %d", v)
			}
			return
		}
		if !failover {
			c := expect(t, rep, "failover.slot", doctor.Warn)
			if !strings.Contains(c.Fix, `ALTER_REPLICATION_SLOT "slot1" (FAILOVER true)`) || !strings.Contains(c.Fix, "replication=database") {
				t.Fatalf("failover.slot fix: %s", c.Fix)
			}
			return
		}
		expect(t, rep, "failover.slot", doctor.OK)
		expect(t, rep, "failover.standbys", doctor.OK)
	}
}
