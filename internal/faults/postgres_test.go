package faults_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// loginSecret is the login secret of every store in this package.
var loginSecret = store.LoginSecret{Version: 1, Key: []byte("tenancy faults test login secret, 32 bytes or more")}

// writes is the table the load writes: each row names its writer's tenant
// (owner) and the writer's sequence number; pairs holds a second row for
// each write made in a transaction of two statements.
var (
	writesTable = store.Table{Name: "writes", Columns: `owner text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (owner, seq)`}
	pairsTable  = store.Table{Name: "pairs", Columns: `owner text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (owner, seq)`}
)

// outageError reports whether err is one a client can match to a server
// that went away or is not back yet: PostgreSQL's shutdown and startup
// errors (SQLSTATE class 57: admin_shutdown, crash_shutdown,
// cannot_connect_now), a refused or reset connection, a connection closed
// under a statement (pgconn.ErrConnClosed, an unexpected EOF), or the
// request's own deadline.
func outageError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "57")
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}

// load is the concurrent multi-tenant load on one DB: per tenant a writer
// (even sequence numbers with DB.Exec, odd ones with DB.Tx of two
// inserts) and a reader that checks every row it reads.
type load struct {
	t    *testing.T
	mode store.Mode
	db   *store.DB

	mu        sync.Mutex // guards the fields below
	attempted map[tenant.ID]map[int64]bool
	acked     map[tenant.ID]map[int64]bool
	lastOK    map[tenant.ID]time.Time // of each tenant's last successful write
	errs      []error                 // failures that are not outage errors, and foreign rows
	outage    int                     // outage errors seen
	bare      int                     // outage errors whose text does not start with "store: "
	sample    []string                // a few outage errors, for the log

	rowsRead atomic.Int64
}

func newLoad(t *testing.T, mode store.Mode, db *store.DB, ids []tenant.ID) *load {
	l := &load{t: t, mode: mode, db: db, attempted: map[tenant.ID]map[int64]bool{},
		acked: map[tenant.ID]map[int64]bool{}, lastOK: map[tenant.ID]time.Time{}}
	for _, id := range ids {
		l.attempted[id], l.acked[id] = map[int64]bool{}, map[int64]bool{}
	}
	return l
}

func (l *load) failed(id tenant.ID, what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if outageError(err) {
		l.outage++
		if !strings.HasPrefix(err.Error(), "store: ") {
			l.bare++
		}
		if len(l.sample) < 3 {
			l.sample = append(l.sample, fmt.Sprintf("%s %s: %v", id, what, err))
		}
		return
	}
	l.errs = append(l.errs, fmt.Errorf("%s: tenant %s: %s: not an outage error a client can match: %w", l.mode, id, what, err))
}

// write runs the tenant's writes until stop is closed.
func (l *load) write(id tenant.ID, stop <-chan struct{}) {
	for seq := int64(0); ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		l.mu.Lock()
		l.attempted[id][seq] = true
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(tenant.NewContext(context.Background(), id), 3*time.Second)
		var err error
		if seq%2 == 0 {
			_, err = l.db.Exec(ctx, `INSERT INTO writes (owner, seq) VALUES ($1, $2)`, id.String(), seq)
		} else {
			err = l.db.Tx(ctx, func(tx *store.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO writes (owner, seq) VALUES ($1, $2)`, id.String(), seq); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO pairs (owner, seq) VALUES ($1, $2)`, id.String(), seq)
				return err
			})
		}
		cancel()
		if err != nil {
			l.failed(id, fmt.Sprintf("write %d", seq), err)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.acked[id][seq] = true
		l.lastOK[id] = time.Now()
		l.mu.Unlock()
	}
}

// read reads the tenant's latest rows until stop is closed, checking that
// every row is the tenant's.
func (l *load) read(id tenant.ID, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(tenant.NewContext(context.Background(), id), 3*time.Second)
		err := l.check(ctx, id, `SELECT tenant_id, owner, seq FROM writes ORDER BY seq DESC LIMIT 20`, nil)
		cancel()
		if err != nil {
			l.failed(id, "read", err)
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// check runs sql for tenant id and records every row whose tenant_id or
// owner is not id; seen, if not nil, gets each row's seq.
func (l *load) check(ctx context.Context, id tenant.ID, sql string, seen map[int64]bool) error {
	rows, err := l.db.Query(ctx, sql)
	if err != nil {
		return err
	}
	var rowTenant, owner string
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&rowTenant, &owner, &seq}, func() error {
		l.rowsRead.Add(1)
		if rowTenant != id.String() || owner != id.String() {
			l.mu.Lock()
			l.errs = append(l.errs, fmt.Errorf("%s: tenant %s read a row of tenant_id %q, owner %q, seq %d", l.mode, id, rowTenant, owner, seq))
			l.mu.Unlock()
		}
		if seen != nil {
			seen[seq] = true
		}
		return nil
	})
	return err
}

// TestPostgresRestartUnderLoadLosesNoCommitAndLeaksNoRow restarts the
// PostgreSQL server (an immediate stop, a crash to the server, then a
// start on the same port) under a concurrent load of several tenants in
// both connection modes, on the DBs opened before the restart:
//
//   - every write whose commit returned nil is there afterwards, and no
//     row is there that no writer attempted; a transaction's two rows are
//     there together or not at all;
//   - every tenant writes again within a bound of the server's start,
//     without reopening the DB;
//   - no read, before, during or after, returns a row of another tenant;
//   - every error during the outage is one a client can match (a
//     shutdown SQLSTATE, a refused or reset connection, a deadline).
//
// rtmx:req REQ-TEN-021
func TestPostgresRestartUnderLoadLosesNoCommitAndLeaksNoRow(t *testing.T) {
	d := pgtest.NewCluster(t)
	// A commit acknowledged must be durable (the throwaway cluster's
	// default is off, for speed).
	d.Exec(t, `ALTER SYSTEM SET synchronous_commit = on`)
	d.Exec(t, `SELECT pg_reload_conf()`)

	login := newFixture(t, d, store.ModeTenantLogin, "login", 4, quickConnect)
	shared := newFixture(t, d.NewDatabase(t), store.ModeSharedPool, "shared", 4, quickConnect)
	loads := []*load{
		newLoad(t, store.ModeTenantLogin, login.db, login.ids),
		newLoad(t, store.ModeSharedPool, shared.db, shared.ids),
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range loads {
		for id := range l.attempted {
			wg.Go(func() { l.write(id, stop) })
			wg.Go(func() { l.read(id, stop) })
		}
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	time.Sleep(time.Second)
	d.Stop(t, pgtest.StopImmediate)
	down := time.Now()
	time.Sleep(1500 * time.Millisecond)
	d.Start(t)
	started := time.Now()
	t.Logf("server down for %v", started.Sub(down).Round(time.Millisecond))

	// Every tenant writes again within the bound.
	const bound = 10 * time.Second
	for _, l := range loads {
		for id := range l.attempted {
			for {
				l.mu.Lock()
				ok := l.lastOK[id].After(started)
				l.mu.Unlock()
				if ok {
					break
				}
				if time.Since(started) > bound {
					t.Fatalf("%s: tenant %s has written nothing %v after the server started", l.mode, id, bound)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	t.Logf("every tenant wrote again %v after the start", time.Since(started).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	stopLoad()

	for _, l := range loads {
		l.mu.Lock()
		for i, err := range l.errs {
			if i == 20 {
				t.Errorf("%s: and %d more", l.mode, len(l.errs)-i)
				break
			}
			t.Error(err)
		}
		if l.outage == 0 {
			t.Errorf("%s: no request failed during the outage: the load did not reach the server", l.mode)
		}
		t.Logf("%s: %d outage errors (%d without the store: prefix), e.g. %q", l.mode, l.outage, l.bare, l.sample)
		l.mu.Unlock()
		for id := range l.attempted {
			writes, pairs := map[int64]bool{}, map[int64]bool{}
			ctx := tenant.NewContext(t.Context(), id)
			if err := l.check(ctx, id, `SELECT tenant_id, owner, seq FROM writes`, writes); err != nil {
				t.Fatalf("%s: tenant %s: reading its writes after the restart: %v", l.mode, id, err)
			}
			if err := l.check(ctx, id, `SELECT tenant_id, owner, seq FROM pairs`, pairs); err != nil {
				t.Fatalf("%s: tenant %s: reading its pairs after the restart: %v", l.mode, id, err)
			}
			var lost, unknown, torn []int64
			for seq := range l.acked[id] {
				if !writes[seq] {
					lost = append(lost, seq)
				}
			}
			for seq := range writes {
				if !l.attempted[id][seq] {
					unknown = append(unknown, seq)
				}
				if seq%2 == 1 && !pairs[seq] {
					torn = append(torn, seq)
				}
			}
			for seq := range pairs {
				if !writes[seq] {
					torn = append(torn, seq)
				}
			}
			if len(lost)+len(unknown)+len(torn) > 0 {
				t.Errorf("%s: tenant %s: committed writes lost %v, rows nobody wrote %v, transactions half there %v",
					l.mode, id, lost, unknown, torn)
			}
			if len(l.acked[id]) < 10 {
				t.Errorf("%s: tenant %s: only %d writes committed: the load did not run", l.mode, id, len(l.acked[id]))
			}
		}
		t.Logf("%s: %d rows read, each checked", l.mode, l.rowsRead.Load())
	}
}
