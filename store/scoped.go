package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rtmx-ai/tenancy/tenant"
)

// setupSQL assumes the tenant for the rest of the transaction. All three
// settings are transaction-local (is_local = true): they end with COMMIT or
// ROLLBACK, or with the Sync of an implicit transaction, and never outlive
// it on the connection.
const setupSQL = `SELECT set_config('role', $1, true), set_config('search_path', $2, true), set_config('app.tenant_id', $3, true)`

// scope is the precomputed setup arguments of one tenant.
type scope struct {
	db     *DB
	id     tenant.ID
	role   string // tenant role name
	path   string // search_path value: the quoted tenant schema, then pg_temp
	suffix string // appended to statements with Config.PlanPerTenant
}

// stmt returns the SQL to send for sql: with Config.PlanPerTenant a comment
// naming the tenant makes every tenant's statement a statement of its own.
func (s *scope) stmt(sql string) string {
	if s.suffix == "" {
		return sql
	}
	return sql + s.suffix
}

func (db *DB) scope(ctx context.Context, op string) (*scope, error) {
	id, err := tenant.Require(ctx, op)
	if err != nil {
		return nil, err
	}
	if s, ok := db.scopes.Load(id); ok {
		return s.(*scope), nil
	}
	// pg_temp last: a temporary table left on the connection by an earlier
	// transaction can never shadow a tenant table (PostgreSQL searches
	// pg_temp first unless the path names it).
	s := &scope{db: db, id: id, role: db.TenantRole(id), path: pgx.Identifier{id.SchemaName()}.Sanitize() + ", pg_temp"}
	if db.planPerTenant {
		// The ID grammar ([a-z0-9_]) cannot end the comment.
		s.suffix = "\n/* tenancy:" + id.String() + " */"
	}
	db.scopes.Store(id, s)
	return s, nil
}

// closeCursorsSQL closes every cursor open on the connection. A cursor
// declared WITH HOLD outlives its transaction with the rows it read as its
// tenant, and any later transaction on the connection, of any tenant, could
// FETCH them by name: no privilege guards a cursor. Closing them before the
// setup means no unit of work sees a cursor it did not open itself.
const closeCursorsSQL = `CLOSE ALL`

// setupStatements is the number of statements queueSetup queues.
const setupStatements = 2

// queueSetup queues the statements that start every unit of work: close
// cursors left on the connection, then assume the tenant.
func (s *scope) queueSetup(b *pgx.Batch) {
	b.Queue(closeCursorsSQL)
	b.Queue(setupSQL, s.role, s.path, s.id.String())
}

// setupError translates an error of the setup statement (or of the batch
// before it) into the store's vocabulary. Only a server error about the
// tenant role means the tenant is unknown; anything else (an argument that
// pgx cannot encode, a cancelled context) is passed on as it is.
func (s *scope) setupError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "22023" || pgErr.Code == "42704" || pgErr.Code == "42501") {
		// invalid_parameter_value / undefined_object: the role does not
		// exist; insufficient_privilege: we are not a member of it.
		// Cache setups of tenants that exist only: IDs from hostile
		// input, and dropped tenants, must not pile up.
		s.db.scopes.Delete(s.id)
		return fmt.Errorf("%s: %w: %s has no placement here (%s)", op, ErrUnknownTenant, s.id, pgErr.Message)
	}
	if errors.As(err, &pgErr) {
		return fmt.Errorf("%s: assume tenant %s: %w", op, s.id, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// warmSet records, per connection, the statements that the connection has
// already prepared (or described) while a tenant role was assumed. Only such
// a statement can travel in the same round trip as the setup: pgx prepares
// new statements of a batch before it executes any, that is before the
// setup has assumed the tenant role and search_path. A connection is used by
// one goroutine at a time, so the map needs no lock.
type warmSet struct {
	m map[string]struct{}
}

func (db *DB) warmOf(c *pgx.Conn) *warmSet {
	if w, ok := db.warm.Load(c); ok {
		return w.(*warmSet)
	}
	w := &warmSet{m: make(map[string]struct{})}
	db.warm.Store(c, w)
	return w
}

func (db *DB) markWarm(c *pgx.Conn, sql string) {
	if db.fastMode || db.slowMode {
		return
	}
	w := db.warmOf(c)
	if len(w.m) >= db.warmLimit && db.warmLimit > 0 {
		clear(w.m) // pgx's LRU evicts too; being cold only costs a round trip
	}
	w.m[sql] = struct{}{}
}

// mark records how sql fared on c when sent after the setup: warm if it
// went through, cold otherwise.
func (db *DB) mark(c *pgx.Conn, sql string, err error) {
	if err == nil {
		db.markWarm(c, sql)
	} else {
		db.markCold(c, sql)
	}
}

func (db *DB) markCold(c *pgx.Conn, sql string) {
	if w, ok := db.warm.Load(c); ok {
		delete(w.(*warmSet).m, sql)
	}
}

// canPipeline reports whether sql can be sent in the setup's round trip.
func (db *DB) canPipeline(c *pgx.Conn, sql string, args []any) bool {
	if db.slowMode {
		return false
	}
	if len(args) > 0 {
		switch args[0].(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return false // per-query options that pgx.Batch does not take
		}
	}
	if db.fastMode {
		return true
	}
	w, ok := db.warm.Load(c)
	if !ok {
		return false
	}
	_, ok = w.(*warmSet).m[sql]
	return ok
}

// isPrepareFailure reports whether a batch failed while pgx prepared its
// statements, before anything was executed: the connection is unchanged and
// the work can be retried the slow way.
func isPrepareFailure(err error) bool {
	var pe pgx.ErrPreprocessingBatch
	return errors.As(err, &pe) && strings.HasPrefix(pe.Error(), "error preprocessing batch (prepare)")
}

// acquire takes a connection and resolves the tenant scope.
func (db *DB) acquire(ctx context.Context, op string) (*scope, *pgxpool.Conn, error) {
	s, err := db.scope(ctx, op)
	if err != nil {
		return nil, nil, err
	}
	conn, err := db.app.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: acquire connection: %w", op, err)
	}
	return s, conn, nil
}

// pipeline sends the setup and sql in one round trip, after BEGIN when
// opts is not nil, and reads the results that come before sql's. On success
// br is positioned at sql's result. slow reports that pgx failed to prepare
// the batch before anything ran: the caller goes the slow way. On any other
// error br is returned closed, so that a begun transaction can be rolled
// back. Every failure marks sql cold on this connection.
func (db *DB) pipeline(ctx context.Context, c *pgx.Conn, s *scope, opts *pgx.TxOptions, sql string, args []any) (br pgx.BatchResults, slow bool, err error) {
	b := &pgx.Batch{}
	before := setupStatements // results before sql's: the setup, and BEGIN if any
	if opts != nil {
		b.BeginTx(*opts)
		before++
	}
	s.queueSetup(b)
	b.Queue(sql, args...)
	br = c.SendBatch(ctx, b)
	for i := range before {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			db.markCold(c, sql)
			if i == 0 && isPrepareFailure(err) {
				return nil, true, nil
			}
			return br, false, err
		}
	}
	return br, false, nil
}

// Tx is a tenant-scoped transaction, handed to the function given to
// [DB.Tx]. Its first statement travels in one round trip together with
// BEGIN and the setup that assumes the tenant (role, search_path,
// app.tenant_id, all transaction-local). A Tx must not be used after the
// function returns, nor by several goroutines at once.
type Tx struct {
	db   *DB
	conn *pgxpool.Conn
	sc   *scope
	opts pgx.TxOptions
	tx   pgx.Tx      // nil until the transaction has begun
	done atomic.Bool // the function given to BeginTx has returned
}

// check returns the error for a Tx used after its function returned (its
// connection is back in the pool, perhaps serving another tenant), or
// with a context that does not carry the Tx's tenant: a tenant-scoped call
// needs its tenant in the context (ErrNoTenant), and one context must not
// speak for another tenant (ErrCrossTenant).
func (t *Tx) check(ctx context.Context, op string) error {
	if t.done.Load() {
		return fmt.Errorf("%s: %w: the transaction ended when the function given to DB.Tx returned", op, pgx.ErrTxClosed)
	}
	_, err := tenant.RequireSame(ctx, op, t.sc.id)
	return err
}

// Tenant returns the tenant the transaction is scoped to.
func (t *Tx) Tenant() tenant.ID { return t.sc.id }

// start begins the transaction and assumes the tenant. When sql can share
// the round trip, it is sent too and the batch results, positioned at its
// result, are returned; otherwise br is nil and the caller sends sql itself.
func (t *Tx) start(ctx context.Context, sql string, args []any) (br pgx.BatchResults, err error) {
	c := t.conn.Conn()
	if sql != "" && t.db.canPipeline(c, sql, args) {
		br, slow, err := t.db.pipeline(ctx, c, t.sc, &t.opts, sql, args)
		if br != nil {
			t.tx = br.Tx()
		}
		if err != nil {
			return nil, t.sc.setupError("store: tx", err)
		}
		if !slow {
			return br, nil
		}
		// evicted from pgx's cache: go the slow way
	}
	b := &pgx.Batch{}
	b.BeginTx(t.opts)
	t.sc.queueSetup(b)
	sbr := c.SendBatch(ctx, b)
	if _, err := sbr.Exec(); err != nil {
		_ = sbr.Close()
		return nil, t.sc.setupError("store: tx", err)
	}
	t.tx = sbr.Tx()
	var serr error
	for range setupStatements {
		if _, serr = sbr.Exec(); serr != nil {
			break
		}
	}
	if err := sbr.Close(); serr == nil {
		serr = err
	}
	if serr != nil {
		return nil, t.sc.setupError("store: tx", serr)
	}
	return nil, nil
}

// Exec runs sql in the transaction; see [pgx.Tx.Exec].
func (t *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.check(ctx, "store: tx exec"); err != nil {
		return pgconn.CommandTag{}, err
	}
	sql = t.sc.stmt(sql)
	if t.tx == nil {
		br, err := t.start(ctx, sql, args)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		if br != nil {
			ct, err := br.Exec()
			if cerr := br.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.db.markCold(t.conn.Conn(), sql)
			}
			return ct, err
		}
	}
	ct, err := t.tx.Exec(ctx, sql, args...)
	t.db.mark(t.conn.Conn(), sql, err)
	return ct, err
}

// Query runs sql in the transaction; see [pgx.Tx.Query]. The rows must be
// closed (or read to the end) before the next statement.
func (t *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.check(ctx, "store: tx query"); err != nil {
		return nil, err
	}
	sql = t.sc.stmt(sql)
	if t.tx == nil {
		br, err := t.start(ctx, sql, args)
		if err != nil {
			return nil, err
		}
		if br != nil {
			c := t.conn.Conn()
			rows, err := br.Query()
			if err != nil {
				_ = br.Close()
				t.db.markCold(c, sql)
				return nil, err
			}
			return batchRows(rows, br, func() { t.db.markCold(c, sql) }, nil), nil
		}
	}
	rows, err := t.tx.Query(ctx, sql, args...)
	t.db.mark(t.conn.Conn(), sql, err)
	return rows, err
}

// QueryRow runs sql in the transaction and returns its only row; see
// [pgx.Tx.QueryRow].
func (t *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := t.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// SendBatch sends b in the transaction; see [pgx.Tx.SendBatch].
func (t *Tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.check(ctx, "store: tx send batch"); err != nil {
		return errBatchResults{err}
	}
	if t.tx == nil {
		if _, err := t.start(ctx, "", nil); err != nil {
			return errBatchResults{err}
		}
	}
	return t.tx.SendBatch(ctx, b)
}

// CopyFrom copies rows into table in the transaction; see [pgx.Tx.CopyFrom].
// tableName is resolved with the tenant's search_path.
//
// PostgreSQL refuses COPY FROM into a table under row level security, which
// every tenant table is (SQLSTATE 0A000). For bulk loads, copy into a
// temporary table of the transaction and move the rows with INSERT ...
// SELECT, which the isolation policy checks row by row:
//
//	CREATE TEMP TABLE staging (LIKE requirements INCLUDING DEFAULTS) ON COMMIT DROP
//	-- tx.CopyFrom(ctx, pgx.Identifier{"staging"}, ...)
//	INSERT INTO requirements SELECT * FROM staging
func (t *Tx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	if err := t.check(ctx, "store: tx copy from"); err != nil {
		return 0, err
	}
	if t.tx == nil {
		if _, err := t.start(ctx, "", nil); err != nil {
			return 0, err
		}
	}
	return t.tx.CopyFrom(ctx, tableName, columnNames, rowSrc)
}

// Tx runs fn in a transaction scoped to the tenant of ctx (read-write, the
// server's default isolation); see [DB.BeginTx].
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	return db.BeginTx(ctx, pgx.TxOptions{}, fn)
}

// BeginTx runs fn in a transaction scoped to the tenant of ctx, with opts.
// If fn returns nil the transaction is committed, otherwise it is rolled
// back and fn's error returned. Without a tenant in ctx it fails with an
// error wrapping [tenant.ErrNoTenant] and touches no connection; for a
// tenant without placement, with one wrapping [ErrUnknownTenant]. If fn runs
// no statement, no transaction is begun at all.
func (db *DB) BeginTx(ctx context.Context, opts pgx.TxOptions, fn func(tx *Tx) error) (err error) {
	s, conn, err := db.acquire(ctx, "store: tx")
	if err != nil {
		return err
	}
	t := &Tx{db: db, conn: conn, sc: s, opts: opts}
	committed := false
	defer func() {
		// Runs on error, on success and while a panic of fn unwinds: roll
		// back whatever was not committed, then give the connection back.
		t.done.Store(true)
		if t.tx != nil && !committed {
			_ = t.tx.Rollback(context.WithoutCancel(ctx))
		}
		conn.Release()
	}()
	if err = fn(t); err != nil {
		return err
	}
	if t.tx == nil {
		return nil
	}
	committed = true
	if err = t.tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// Exec runs one statement scoped to the tenant of ctx, in an implicit
// transaction that it shares one round trip with the setup.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	s, conn, err := db.acquire(ctx, "store: exec")
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer conn.Release()
	c := conn.Conn()
	tsql := s.stmt(sql)
	if db.canPipeline(c, tsql, args) {
		br, slow, err := db.pipeline(ctx, c, s, nil, tsql, args)
		if err != nil {
			return pgconn.CommandTag{}, s.setupError("store: exec", err)
		}
		if !slow {
			ct, err := br.Exec()
			if cerr := br.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				// pgx may have dropped the statement from its cache: the
				// next call prepares it again under the tenant.
				db.markCold(c, tsql)
			}
			return ct, err
		}
	}
	t := &Tx{db: db, conn: conn, sc: s}
	ct, err := t.Exec(ctx, sql, args...)
	if t.tx != nil {
		if err != nil {
			_ = t.tx.Rollback(context.WithoutCancel(ctx))
			return ct, err
		}
		err = t.tx.Commit(ctx)
	}
	return ct, err
}

// Query runs one query scoped to the tenant of ctx, in an implicit
// transaction that shares one round trip with the setup. The rows hold a
// connection until they are closed or read to the end.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	s, conn, err := db.acquire(ctx, "store: query")
	if err != nil {
		return nil, err
	}
	c := conn.Conn()
	tsql := s.stmt(sql)
	if db.canPipeline(c, tsql, args) {
		br, slow, err := db.pipeline(ctx, c, s, nil, tsql, args)
		if err != nil {
			conn.Release()
			return nil, s.setupError("store: query", err)
		}
		if !slow {
			rows, err := br.Query()
			if err != nil {
				_ = br.Close()
				db.markCold(c, tsql)
				conn.Release()
				return nil, err
			}
			return batchRows(rows, br, func() { db.markCold(c, tsql) }, conn.Release), nil
		}
	}
	t := &Tx{db: db, conn: conn, sc: s}
	rows, err := t.Query(ctx, sql, args...)
	if err != nil {
		if t.tx != nil {
			_ = t.tx.Rollback(context.WithoutCancel(ctx))
		}
		conn.Release()
		return nil, err
	}
	return txRows(ctx, rows, t.tx, conn.Release), nil
}

// QueryRow runs one query scoped to the tenant of ctx and returns its only
// row; see [DB.Query].
func (db *DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := db.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// finishRows wraps rows whose end must do more than close them: finish
// runs once, when the rows are closed or read to the end, with the rows'
// error, and returns the error to report if the rows had none.
type finishRows struct {
	pgx.Rows
	finish func(rowsErr error) error
	closed bool
	err    error
}

func (r *finishRows) Next() bool {
	if r.closed {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *finishRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.finish(r.Rows.Err())
}

func (r *finishRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// batchRows are the rows of a statement sent in a batch with the setup:
// closing them reads the rest of the batch, calls onErr if the statement
// failed and release (for the one-statement calls), both when not nil.
func batchRows(rows pgx.Rows, br pgx.BatchResults, onErr, release func()) pgx.Rows {
	return &finishRows{Rows: rows, finish: func(rowsErr error) error {
		err := br.Close()
		if rowsErr != nil {
			err = nil // the rows' own error is the one to report
		}
		if (rowsErr != nil || err != nil) && onErr != nil {
			onErr()
		}
		if release != nil {
			release()
		}
		return err
	}}
}

// txRows are the rows of a one-statement query that had to run in an
// explicit transaction: closing them commits (or rolls back) and releases.
func txRows(ctx context.Context, rows pgx.Rows, tx pgx.Tx, release func()) pgx.Rows {
	return &finishRows{Rows: rows, finish: func(rowsErr error) (err error) {
		defer release()
		if rowsErr != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return nil
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
		return nil
	}}
}

// row implements pgx.Row over rows, like pgx's own.
type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		if r.rows != nil {
			r.rows.Close()
		}
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errBatchResults reports err from every call.
type errBatchResults struct{ err error }

func (e errBatchResults) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, e.err }
func (e errBatchResults) Query() (pgx.Rows, error)         { return nil, e.err }
func (e errBatchResults) QueryRow() pgx.Row                { return &row{err: e.err} }
func (e errBatchResults) Close() error                     { return e.err }
func (e errBatchResults) Tx() pgx.Tx                       { return nil }
