package cdc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/repstream/repstream/cdc/localpg"
)

// TestOutputSettingsReplaceTheURLs: a database_url that sets TimeZone (in
// any spelling) still gets UTC, on both connections, and a session whose
// settings differ from what was asked is refused with the setting's name.
func TestOutputSettingsReplaceTheURLs(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url += "&timezone=Asia/Tokyo&DateStyle=German"

	rconn, err := ConnectReplication(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close(context.Background())
	sconn, err := ConnectSnapshot(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(context.Background())
	for _, c := range []*pgconn.PgConn{rconn, sconn.PgConn()} {
		for name, want := range map[string]string{"TimeZone": "UTC", "DateStyle": "ISO, MDY", "extra_float_digits": "1", "bytea_output": "hex"} {
			res, err := c.Exec(ctx, "SHOW "+name).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(res[0].Rows[0][0]); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	}

	if _, err := sconn.Exec(ctx, "SET TimeZone = 'Asia/Tokyo'"); err != nil {
		t.Fatal(err)
	}
	err = checkOutputSettings(sconn.PgConn())
	if err == nil || !strings.Contains(err.Error(), `TimeZone = "Asia/Tokyo"`) {
		t.Fatalf("checkOutputSettings after SET TimeZone: %v, want an error naming TimeZone", err)
	}
}

// TestBeginSnapshotRefusesOtherSettings: a snapshot read on a session with
// other output settings would load text the stream never sends.
func TestBeginSnapshotRefusesOtherSettings(t *testing.T) {
	url, _ := localpg.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := ConnectSnapshot(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET DateStyle = 'German'"); err != nil {
		t.Fatal(err)
	}
	_, err = BeginSnapshot(ctx, conn, "00000003-00000002-1")
	if err == nil || !strings.Contains(err.Error(), "DateStyle") || !strings.Contains(err.Error(), "ConnectSnapshot") {
		t.Fatalf("BeginSnapshot on a German DateStyle session: %v, want an error naming DateStyle and ConnectSnapshot", err)
	}
}
