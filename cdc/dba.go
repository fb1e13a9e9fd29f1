package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backend is a server process from pg_stat_activity, so a DBA learns who
// holds a slot rather than just a PID.
type Backend struct {
	PID             int32
	ApplicationName string // empty when unset or not visible to this role
	User            string
	ClientAddr      string // empty for a Unix socket, or when not visible to this role
	BackendType     string // "walsender" for a replication connection
	BackendStart    time.Time
}

// String names the backend the way the doctor and the DBA commands print it.
func (b Backend) String() string {
	s := fmt.Sprintf("PID %d", b.PID)
	if b.ApplicationName != "" {
		s += fmt.Sprintf(" (application_name %q", b.ApplicationName)
	} else {
		s += " (no application_name"
	}
	if b.User != "" {
		s += ", user " + b.User
	}
	if b.ClientAddr != "" {
		s += ", from " + b.ClientAddr
	}
	return s + ")"
}

// LookupBackend returns the backend with pid, or ok=false when it has exited.
// Roles without pg_read_all_stats see fewer columns of other roles' sessions.
func LookupBackend(ctx context.Context, q Querier, pid int32) (b Backend, ok bool, err error) {
	var app, user, addr, typ *string
	var start *time.Time
	err = q.QueryRow(ctx, `
SELECT pid, application_name, usename::text, host(client_addr), backend_type, backend_start
FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&b.PID, &app, &user, &addr, &typ, &start)
	if errors.Is(err, pgx.ErrNoRows) {
		return Backend{PID: pid}, false, nil
	}
	if err != nil {
		return Backend{PID: pid}, false, fmt.Errorf("cdc: look up backend %d: %w", pid, err)
	}
	for _, f := range []struct {
		dst *string
		src *string
	}{{&b.ApplicationName, app}, {&b.User, user}, {&b.ClientAddr, addr}, {&b.BackendType, typ}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if start != nil {
		b.BackendStart = *start
	}
	return b, true, nil
}

// TerminateBackend ends pid's session with pg_terminate_backend and waits up
// to timeout for the process to exit, so a slot it held is free on return.
// It needs superuser, pg_signal_backend, or the same role as the session.
func TerminateBackend(ctx context.Context, q Querier, pid int32, timeout time.Duration) error {
	var done *bool
	ms := timeout.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	if err := q.QueryRow(ctx, `SELECT pg_terminate_backend($1, $2)`, pid, ms).Scan(&done); err != nil {
		return fmt.Errorf("cdc: terminate backend %d: %w", pid, err)
	}
	if done == nil || !*done {
		return fmt.Errorf("cdc: terminate backend %d: still running after %s", pid, timeout)
	}
	return nil
}

// WaitSlotInactive polls until slot name has no active PID or timeout passes:
// a terminated walsender releases its slot while it exits.
func WaitSlotInactive(ctx context.Context, q Querier, name string, timeout time.Duration) (Slot, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, ok, err := LookupSlot(ctx, q, name)
		if err != nil {
			return s, err
		}
		if !ok || !s.Active {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("%w: slot %s is still active for PID %d after %s", ErrSlotInUse, name, s.ActivePID, timeout)
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
