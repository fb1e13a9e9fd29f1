package doctor_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/repstream/repstream/cdc/doctor"
)

// buildCLI builds the repstream binary into a temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH to build the CLI")
	}
	bin := filepath.Join(t.TempDir(), "repstream")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/repstream/repstream/cmd/repstream").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func writeConfig(t *testing.T, dbURL, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "repstream.yaml")
	cfg := "database_url: " + dbURL + `
publication: pub1
slot: slot1
sources:
  - table: public.reviews
    subject: "seller:{seller_id}"
    score: rating
    scale: [1, 5]
    where: { status: published }
` + extra
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cli runs the binary with a clean environment (no DATABASE_URL or
// REPSTREAM_* overriding the file) and returns stdout, stderr and the exit code.
func cli(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(ctx(t), bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "REPSTREAM_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func doctorJSON(t *testing.T, bin, config string, wantCode int) doctor.Report {
	t.Helper()
	out, errOut, code := cli(t, bin, "doctor", "--config", config, "--json")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json printed no JSON (%v):\n%s\nstderr: %s", err, out, errOut)
	}
	for _, c := range rep.Checks {
		if c.Name == "" || c.Status == "" || c.Message == "" {
			t.Errorf("incomplete check %+v", c)
		}
	}
	if code != wantCode {
		t.Fatalf("doctor exit code %d, want %d:\n%s\nstderr: %s", code, wantCode, out, errOut)
	}
	if rep.OK != (wantCode == 0) {
		t.Errorf("ok = %v with exit code %d", rep.OK, code)
	}
	return rep
}

// The binary end to end: doctor --json and its exit codes (0 ready, 2 a
// failed check, 1 cannot connect), then the DBA commands.
func TestCLI(t *testing.T) {
	bin := buildCLI(t)
	dbURL, _ := newDB(t)
	config := writeConfig(t, dbURL, "")

	// The DBA's publication commands: review, create, refuse a second create.
	out, errOut, code := cli(t, bin, "publication", "sql", "--config", config)
	want := `CREATE PUBLICATION "pub1" FOR TABLE "public"."reviews" ("id", "rating", "seller_id", "status") WITH (publish = 'insert, update, delete, truncate');`
	if serverVersion(t, dbURL) < 150000 {
		want = `CREATE PUBLICATION "pub1" FOR TABLE "public"."reviews" WITH (publish = 'insert, update, delete, truncate');`
	}
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("publication sql: exit %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = cli(t, bin, "publication", "create", "--config", config)
	if code != 0 || !strings.HasPrefix(out, "created publication pub1:\nCREATE PUBLICATION") {
		t.Fatalf("publication create: exit %d\n%s\n%s", code, out, errOut)
	}
	_, errOut, code = cli(t, bin, "publication", "create", "--config", config)
	if code != 1 || !strings.Contains(errOut, "publication pub1 already exists") {
		t.Fatalf("second publication create: exit %d: %s", code, errOut)
	}

	// Ready: warnings only.
	rep := doctorJSON(t, bin, config, 0)
	expect(t, rep, "publication", doctor.OK)
	expect(t, rep, "max_slot_wal_keep_size", doctor.Warn)

	// A slot held by another client: exit 2.
	sqlExec(t, dbURL, `SELECT pg_create_logical_replication_slot('slot1', 'pgoutput')`)
	pid := holdSlot(t, dbURL, "slot1", "pub1", "other-consumer")
	rep = doctorJSON(t, bin, config, 2)
	ch := expect(t, rep, "slot.active", doctor.Fail)
	if !strings.Contains(ch.Message, `"other-consumer"`) {
		t.Errorf("slot.active: %s", ch.Message)
	}
	out, _, code = cli(t, bin, "doctor", "--config", config)
	if code != 2 || !strings.Contains(out, "FAIL slot slot1 is held by PID") || !strings.Contains(out, "\n     fix: stop that client") {
		t.Errorf("doctor text: exit %d\n%s", code, out)
	}

	// slot status and drop.
	out, _, code = cli(t, bin, "slot", "status", "--config", config, "--json")
	var st doctor.SlotStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || !st.Exists || st.ActivePID != pid || st.ApplicationName != "other-consumer" {
		t.Fatalf("slot status --json: exit %d %v\n%s", code, err, out)
	}
	out, _, code = cli(t, bin, "slot", "status", "--config", config)
	if code != 0 || !strings.Contains(out, "wal_status") || !strings.Contains(out, "retained") {
		t.Fatalf("slot status: exit %d\n%s", code, out)
	}
	_, errOut, code = cli(t, bin, "slot", "drop", "--config", config)
	if code == 0 || !strings.Contains(errOut, "new epoch") || !strings.Contains(errOut, "--yes") {
		t.Fatalf("slot drop without --yes: exit %d: %s", code, errOut)
	}
	_, errOut, code = cli(t, bin, "slot", "drop", "--config", config, "--yes")
	if code == 0 || !strings.Contains(errOut, "--force") {
		t.Fatalf("slot drop of an active slot without --force: exit %d: %s", code, errOut)
	}
	out, errOut, code = cli(t, bin, "slot", "drop", "--config", config, "--yes", "--force")
	if code != 0 || !strings.Contains(out, "terminated PID") || !strings.Contains(out, "dropped slot slot1") {
		t.Fatalf("slot drop --yes --force: exit %d\n%s\n%s", code, out, errOut)
	}
	_, _, code = cli(t, bin, "slot", "status", "--config", config)
	if code != 1 {
		t.Fatalf("slot status of a dropped slot: exit %d", code)
	}
	doctorJSON(t, bin, config, 0)

	// An invalid configuration: failures naming the key, exit 2.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("database_url: "+dbURL+"\nsources:\n  - table: public.reviews\n    subject: \"seller:{seller_id}\"\n    score: rating\n"), 0o600) //nolint:errcheck
	rep = doctorJSON(t, bin, bad, 2)
	expect(t, rep, "config:sources[0].scale", doctor.Fail)

	// Doctor cannot connect: a finding with the fix, exit 1.
	rep = doctorJSON(t, bin, writeConfig(t, "postgres://postgres@127.0.0.1:1/x?sslmode=disable", ""), 1)
	ch = expect(t, rep, "connect", doctor.Fail)
	if !strings.Contains(ch.Fix, "start Postgres") {
		t.Errorf("connect fix: %s", ch.Fix)
	}
}
