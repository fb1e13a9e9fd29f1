// Package localpg runs a throwaway Postgres cluster configured for logical
// replication from the server binaries installed on this machine: the demo
// (`repstream dev`) and the tests need one and must not depend on a DBA.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoServer means no PostgreSQL server binaries were found.
var ErrNoServer = errors.New("localpg: no PostgreSQL server binaries found (install them: apt-get install -y postgresql)")

// Options tunes the cluster; the zero value is a logical-replication cluster
// with fsync on, on a free port, in a new temporary directory.
type Options struct {
	// Port to listen on; zero picks a free one.
	Port int
	// NoFsync turns fsync off: faster tests, no crash safety of the cluster itself.
	NoFsync bool
	// WALLevel is "logical" when empty; "replica" builds a misconfigured cluster for doctor's tests.
	WALLevel string
	// Settings are extra postgresql.conf lines, e.g. "wal_sender_timeout = '5s'".
	Settings []string
	// Dir is the parent of the data directory; empty means os.TempDir().
	Dir string
	// BinDir holds the server binaries; empty means $REPSTREAM_TEST_PG's
	// server when set (see ServerBinDir), else the newest installed one.
	BinDir string
}

// Cluster is a running throwaway Postgres. Stop it to remove it.
type Cluster struct {
	BinDir  string
	DataDir string
	Port    int
	cred    *syscall.Credential
	base    string
}

// URL is a superuser connection string for database db ("postgres" when empty).
func (c *Cluster) URL(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Addr is the server's host:port on the loopback interface.
func (c *Cluster) Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.Port) }

// BinDir finds the newest installed server's bin directory.
func BinDir() (string, error) {
	if p, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(p, "--bindir").Output(); err == nil {
			d := strings.TrimSpace(string(out))
			if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
				return d, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(r), nil
		}
	}
	return "", ErrNoServer
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start creates and starts a cluster. initdb refuses to run as root, so as
// root the cluster runs as the "postgres" user.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin := o.BinDir
	if bin == "" {
		var err error
		if bin, err = ServerBinDir(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{BinDir: bin, Port: o.Port}
	owner := -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("localpg: running as root needs a 'postgres' user to own the cluster (the postgresql package creates it): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		owner = uid
	}
	base, err := os.MkdirTemp(o.Dir, "repstream-pg-")
	if err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	c.base = base
	c.DataDir = filepath.Join(base, "data")
	if owner >= 0 {
		if err := os.Chown(base, owner, int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("localpg: chown %s: %w", base, err)
		}
	}
	if c.Port == 0 {
		if c.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := c.run(ctx, "initdb", "-D", c.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"); err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	wal := o.WALLevel
	if wal == "" {
		wal = "logical"
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		fmt.Sprintf("port = %d", c.Port),
		fmt.Sprintf("unix_socket_directories = '%s'", base),
		"wal_level = " + wal,
		"max_replication_slots = 64",
		"max_wal_senders = 64",
		"max_connections = 400",
		"shared_buffers = 128MB",
		"logging_collector = off",
		"log_min_messages = warning",
	}
	if o.NoFsync {
		conf = append(conf, "fsync = off", "synchronous_commit = off", "full_page_writes = off")
	}
	conf = append(conf, o.Settings...)
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.remove()
		return nil, fmt.Errorf("localpg: %w", err)
	}
	_, err = f.WriteString("\n# repstream localpg\n" + strings.Join(conf, "\n") + "\n")
	f.Close()
	if err != nil {
		c.remove()
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// Start starts a stopped cluster and waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "-D", c.DataDir, "-l", filepath.Join(c.base, "server.log"), "-w", "-t", "60", "start")
}

// Kill stops the server like a crash (immediate mode: no shutdown checkpoint).
func (c *Cluster) Kill(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "stop")
}

// Restart stops the server (fast mode) and starts it again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "stop"); err != nil {
		return err
	}
	return c.Start(ctx)
}

// Log returns the server log so far, for test failure messages.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.base, "server.log"))
	return string(b)
}

// Stop shuts the server down and removes its files.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "stop")
	if err != nil { // fall back to immediate; a stuck client must not leak a server
		err = c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "stop")
	}
	c.remove()
	return err
}

func (c *Cluster) remove() { os.RemoveAll(c.base) }

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, name), args...)
	cmd.Dir = os.TempDir()
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("localpg: %s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("localpg: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CreateDatabase creates database name on the server at adminURL.
func CreateDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("localpg: connect: %w", err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil {
		return fmt.Errorf("localpg: create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name after dropping every replication slot on
// it (a leaked slot pins WAL forever) and ending its sessions.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("localpg: connect: %w", err)
	}
	defer conn.Close(ctx)
	for i := 0; i < 50; i++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("localpg: drop slots of %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("localpg: drop database %s: %w", name, err)
	}
	return nil
}

// NewStandby makes a physical standby of c from a cold copy of its data
// directory (no pg_basebackup): c is stopped for the copy and started
// again. The standby streams from c through physical slot slot ("" for
// none) and runs on a port of its own; settings are extra postgresql.conf
// lines (sync_replication_slots = on, say). Stop it to remove it.
func (c *Cluster) NewStandby(ctx context.Context, slot string, settings ...string) (*Cluster, error) {
	base, err := os.MkdirTemp(filepath.Dir(c.base), "repstream-pg-standby-")
	if err != nil {
		return nil, fmt.Errorf("localpg: %w", err)
	}
	s := &Cluster{BinDir: c.BinDir, DataDir: filepath.Join(base, "data"), cred: c.cred, base: base}
	if c.cred != nil {
		if err := os.Chown(base, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			s.remove()
			return nil, fmt.Errorf("localpg: chown %s: %w", base, err)
		}
	}
	if s.Port, err = freePort(); err != nil {
		s.remove()
		return nil, err
	}
	if err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "stop"); err != nil {
		s.remove()
		return nil, err
	}
	cp := exec.CommandContext(ctx, "cp", "-a", c.DataDir, s.DataDir)
	if c.cred != nil {
		cp.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	out, cpErr := cp.CombinedOutput()
	if err := c.Start(ctx); err != nil || cpErr != nil {
		s.remove()
		return nil, errors.Join(err, fmt.Errorf("localpg: copy the data directory: %v: %s", cpErr, out))
	}
	conf := []string{
		"",
		"# repstream localpg standby",
		fmt.Sprintf("port = %d", s.Port),
		fmt.Sprintf("unix_socket_directories = '%s'", base),
		fmt.Sprintf("primary_conninfo = 'host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=standby'", c.Port),
		fmt.Sprintf("primary_slot_name = '%s'", slot),
		"hot_standby = on",
	}
	conf = append(conf, settings...)
	if err := appendFile(filepath.Join(s.DataDir, "postgresql.conf"), strings.Join(conf, "\n")+"\n"); err != nil {
		s.remove()
		return nil, err
	}
	signal := filepath.Join(s.DataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		s.remove()
		return nil, fmt.Errorf("localpg: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(signal, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			s.remove()
			return nil, fmt.Errorf("localpg: %w", err)
		}
	}
	if err := s.Start(ctx); err != nil {
		s.remove()
		return nil, err
	}
	return s, nil
}

// NewFailoverStandby makes a hot standby of c ready to replace it: a
// physical slot slot on c, hot_standby_feedback on, and, with syncSlots
// (PostgreSQL 17+), c's failover slots synchronized to it
// (sync_replication_slots on the standby, synchronized_standby_slots on c).
// The failover tests and the benchmark build the same pair from it.
func (c *Cluster) NewFailoverStandby(ctx context.Context, slot string, syncSlots bool) (*Cluster, error) {
	conn, err := pgx.Connect(ctx, c.URL(""))
	if err != nil {
		return nil, fmt.Errorf("localpg: connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, slot); err != nil {
		return nil, fmt.Errorf("localpg: create physical slot %s: %w", slot, err)
	}
	settings := []string{"hot_standby_feedback = on"}
	if syncSlots {
		settings = append(settings, "sync_replication_slots = on")
	}
	conn.Close(ctx) // NewStandby stops c for the copy
	s, err := c.NewStandby(ctx, slot, settings...)
	if err != nil {
		return nil, err
	}
	if !syncSlots {
		return s, nil
	}
	if conn, err = pgx.Connect(ctx, c.URL("")); err != nil {
		s.Stop() //nolint:errcheck
		return nil, fmt.Errorf("localpg: connect: %w", err)
	}
	for _, q := range []string{`ALTER SYSTEM SET synchronized_standby_slots = ` + quoteLiteral(slot), `SELECT pg_reload_conf()`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			s.Stop() //nolint:errcheck
			return nil, fmt.Errorf("localpg: %s: %w", q, err)
		}
	}
	return s, nil
}

// WaitSlotSynced waits until standby holds a synced, persistent copy of
// logical slot slot that has caught up with the position primary had
// confirmed when called: only then does a promotion keep the slot.
func WaitSlotSynced(ctx context.Context, primary, standby *Cluster, slot string, within time.Duration) error {
	p, err := pgx.Connect(ctx, primary.URL(""))
	if err != nil {
		return fmt.Errorf("localpg: connect: %w", err)
	}
	defer p.Close(ctx)
	var want string
	if err := p.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&want); err != nil {
		return fmt.Errorf("localpg: slot %s on the primary: %w", slot, err)
	}
	s, err := pgx.Connect(ctx, standby.URL(""))
	if err != nil {
		return fmt.Errorf("localpg: connect: %w", err)
	}
	defer s.Close(ctx)
	for deadline := time.Now().Add(within); ; {
		var ok bool
		err := s.QueryRow(ctx, `SELECT synced AND NOT temporary AND confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, slot, want).Scan(&ok)
		if err == nil && ok {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("localpg: slot %s on the standby: %w", slot, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("localpg: the standby has no synced copy of slot %s at %s after %s:\n%s", slot, want, within, standby.Log())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Promote turns a standby into a primary and waits until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "-D", c.DataDir, "-w", "-t", "60", "promote")
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localpg: %w", err)
	}
	return nil
}
