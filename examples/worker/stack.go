package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"

	"github.com/rtmx-ai/tenancy/internal/scratchdb"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// queueSchema is the schema of River's tables and the worker's replay and
// refusal tables, owned by the queue's login role.
const queueSchema = "queue"

// queues are the River queues the worker serves.
var queues = []string{river.QueueDefault, "reports"}

// options says where the worker runs and which cluster-wide names it
// creates; everything so named is dropped at the end.
type options struct {
	// AdminURL is the connection string of a PostgreSQL superuser: setup,
	// cleanup, and store's admin role on the scratch database.
	AdminURL string
	// Database is the scratch database, created and dropped.
	Database string
	// RolePrefix prefixes the platform and queue roles and store's tenant
	// roles: [a-z][a-z0-9_]*, 3 to 16 bytes, ending in "_", not starting
	// with "pg_". Every role whose name starts with it is dropped.
	RolePrefix string
	// Logger is River's and the middleware's logger; nil discards.
	Logger *slog.Logger
}

// uniqueOptions returns names no other run uses: tenancy_worker_<hex>
// and tw<hex>_.
func uniqueOptions(adminURL string) options {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	s := hex.EncodeToString(b)
	return options{AdminURL: adminURL, Database: "tenancy_worker_" + s, RolePrefix: "tw" + s + "_"}
}

func (o options) validate() error {
	if err := scratchdb.CheckNames(o.Database, o.RolePrefix); err != nil {
		return err
	}
	return nil
}

// stack is everything the worker runs on: the scratch database with its
// tenants (store), River on its own schema and login, the carrier, the
// middleware, the enqueuer and a started River client.
type stack struct {
	o        options
	server   *pgx.Conn // superuser: setup and cleanup
	admin    *store.Admin
	db       *store.DB
	queue    *pgxpool.Pool // logged in as the queue role
	carrier  *tenant.JobCarrier
	mw       *Middleware
	client   *river.Client[pgx.Tx]
	enqueuer *Enqueuer
	secrets  secrets
}

// secrets are what a process needs, besides options, to work the
// stack's queue: the logins' passwords, store's login secret and the
// carrier's key. Made fresh by each openStack.
type secrets struct {
	PlatformPassword, QueuePassword string
	LoginSecret, CarrierKey         []byte
}

// Format prints no secret, with any verb (%v, %+v, %#v, %s, ...): the
// fields are exported only so that a test can hand them to a child process
// as JSON.
func (secrets) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "worker.secrets{redacted}") }

// createLoginRole is the statement that creates login role name with
// password. The password goes as a SCRAM-SHA-256 verifier computed in Go,
// never in clear text, which the server's log_statement and
// pg_stat_statements would keep. The stack's passwords are 128 random
// bits, which no iteration count is needed to protect, so the verifier
// takes store.DefaultSCRAMIterations.
func createLoginRole(name, password string) (string, error) {
	return scratchdb.LoginRole(name, password)
}

// openStack sets up the scratch database, the tenants ids (standard
// tier), River's schema and the worker, and starts River. handler, if
// set, replaces the Recount handler (tests wrap it). On error, what was
// set up is torn down.
func openStack(ctx context.Context, o options, ids []tenant.ID, handler func(*store.DB) Handler[Recount]) (_ *stack, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	server, err := pgx.Connect(ctx, o.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL, or pass -admin-url (or TENANCY_WORKER_ADMIN_URL)", scratchdb.Target(o.AdminURL), err)
	}
	s := &stack{o: o, server: server}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close(context.WithoutCancel(ctx)))
		}
	}()
	if err := cleanup(ctx, server, o); err != nil {
		return s, err
	}

	// The platform role (store's request path) and the queue role (River)
	// are two logins: the queue's holds no tenant data and reaches none,
	// and no tenant login reaches the queue.
	s.secrets = secrets{PlatformPassword: randomHex(16), QueuePassword: randomHex(16), LoginSecret: randomBytes(32), CarrierKey: randomBytes(32)}
	queueRole := o.RolePrefix + "queue"
	createPlatform, err := createLoginRole(o.RolePrefix+"platform", s.secrets.PlatformPassword)
	if err != nil {
		return s, fmt.Errorf("setup: %w", err)
	}
	createQueue, err := createLoginRole(queueRole, s.secrets.QueuePassword)
	if err != nil {
		return s, fmt.Errorf("setup: %w", err)
	}
	for _, sql := range []string{`CREATE DATABASE ` + o.Database, createPlatform, createQueue} {
		if _, err := server.Exec(ctx, sql); err != nil {
			return s, fmt.Errorf("setup: %w", err)
		}
	}
	secret := store.LoginSecret{Version: 1, Key: s.secrets.LoginSecret}
	acfg, err := store.ParseAdminConfig(o.AdminURL)
	if err != nil {
		return s, err
	}
	acfg.Pool.ConnConfig.Database = o.Database
	acfg.PlatformRole = o.RolePrefix + "platform"
	acfg.RolePrefix = o.RolePrefix
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Tables = []store.Table{requirements, recounts}
	if s.admin, err = store.OpenAdmin(ctx, acfg); err != nil {
		return s, err
	}
	// The queue's schema, owned by the queue role, in the scratch
	// database (store revoked CONNECT, and CREATE on public, from PUBLIC there).
	qsetup, err := pgx.ParseConfig(o.AdminURL)
	if err != nil {
		return s, err
	}
	qsetup.Database = o.Database
	qconn, err := pgx.ConnectConfig(ctx, qsetup)
	if err != nil {
		return s, fmt.Errorf("setup: %w", err)
	}
	for _, sql := range []string{
		`GRANT CONNECT ON DATABASE ` + o.Database + ` TO ` + queueRole,
		`CREATE SCHEMA ` + queueSchema + ` AUTHORIZATION ` + queueRole,
	} {
		if _, err = qconn.Exec(ctx, sql); err != nil {
			break
		}
	}
	_ = qconn.Close(ctx)
	if err != nil {
		return s, fmt.Errorf("setup: %w", err)
	}

	for _, id := range ids {
		if err := s.admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Tenant " + id.String(), Tier: tenant.TierStandard, Region: "us-gov-east-1"}); err != nil {
			return s, err
		}
	}

	// River's migrations, logged in as the queue role, on its schema,
	// then the worker's tables beside them.
	qcfg, err := s.queueConfig()
	if err != nil {
		return s, err
	}
	if s.queue, err = pgxpool.NewWithConfig(ctx, qcfg); err != nil {
		return s, err
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(s.queue), &rivermigrate.Config{Schema: queueSchema, Logger: o.logger()})
	if err != nil {
		return s, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return s, fmt.Errorf("river migrations: %w", err)
	}
	if err := Install(ctx, s.queue, queueSchema); err != nil {
		return s, err
	}
	return s, s.start(ctx, handler)
}

// attachStack works the queue of a stack another process set up with
// openStack: it connects with o and sec, and starts River. Its close
// leaves the database and roles in place.
func attachStack(ctx context.Context, o options, sec secrets, handler func(*store.DB) Handler[Recount]) (_ *stack, err error) {
	s := &stack{o: o, secrets: sec}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close(context.WithoutCancel(ctx)))
		}
	}()
	qcfg, err := s.queueConfig()
	if err != nil {
		return s, err
	}
	if s.queue, err = pgxpool.NewWithConfig(ctx, qcfg); err != nil {
		return s, err
	}
	return s, s.start(ctx, handler)
}

// queueConfig is the queue pool's: the queue role on the scratch
// database, with AdminURL's host and TLS settings.
func (s *stack) queueConfig() (*pgxpool.Config, error) {
	qcfg, err := pgxpool.ParseConfig(s.o.AdminURL)
	if err != nil {
		return nil, err
	}
	qcfg.ConnConfig.Database = s.o.Database
	qcfg.ConnConfig.User, qcfg.ConnConfig.Password = s.o.RolePrefix+"queue", s.secrets.QueuePassword
	return qcfg, nil
}

func (o options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.Logger
}

// start opens the request path's DB, makes the carrier, the middleware
// and the enqueuer, and starts River on s.queue.
func (s *stack) start(ctx context.Context, handler func(*store.DB) Handler[Recount]) (err error) {
	if handler == nil {
		handler = recountHandler
	}
	cfg, err := store.ParseConfig(s.o.AdminURL, store.LoginSecret{Version: 1, Key: s.secrets.LoginSecret})
	if err != nil {
		return err
	}
	cfg.Platform.ConnConfig.Database = s.o.Database
	cfg.Platform.ConnConfig.User, cfg.Platform.ConnConfig.Password = s.o.RolePrefix+"platform", s.secrets.PlatformPassword
	if s.db, err = store.Open(ctx, cfg); err != nil {
		return err
	}
	// The carrier's key is a platform secret in production, shared by
	// every enqueuer and worker; a fresh one per run here.
	if s.carrier, err = tenant.NewJobCarrier(s.secrets.CarrierKey); err != nil {
		return err
	}
	logger := s.o.logger()
	if s.mw, err = NewMiddleware(MiddlewareConfig{Carrier: s.carrier, Pool: s.queue, Schema: queueSchema, Logger: logger}); err != nil {
		return err
	}
	workers := river.NewWorkers()
	if err := AddWorker(workers, s.mw, handler(s.db)); err != nil {
		return err
	}
	qs := map[string]river.QueueConfig{}
	for _, q := range queues {
		qs[q] = river.QueueConfig{MaxWorkers: 8}
	}
	s.client, err = river.NewClient(riverpgxv5.New(s.queue), &river.Config{
		Schema:            queueSchema,
		Queues:            qs,
		Workers:           workers,
		Logger:            logger,
		FetchPollInterval: 50 * time.Millisecond,
		FetchCooldown:     10 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	if err := s.client.Start(ctx); err != nil {
		return err
	}
	s.enqueuer, err = NewEnqueuer(s.client, s.carrier, 10*time.Minute)
	return err
}

// close stops River, closes the pools and drops what setup made.
func (s *stack) close(ctx context.Context) error {
	var errs []error
	if s.client != nil {
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		errs = append(errs, s.client.Stop(stopCtx))
		cancel()
	}
	if s.queue != nil {
		s.queue.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	if s.server != nil {
		errs = append(errs, cleanup(ctx, s.server, s.o))
		errs = append(errs, s.server.Close(ctx))
	}
	return errors.Join(errs...)
}

// waitFinal waits until River's row id reaches a final state (completed,
// cancelled or discarded) and returns it.
func (s *stack) waitFinal(ctx context.Context, id int64) (*rivertype.JobRow, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		row, err := s.client.JobGet(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", id, err)
		}
		switch row.State {
		case rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded:
			return row, nil
		}
		select {
		case <-ctx.Done():
			return row, fmt.Errorf("job %d still %s: %w", id, row.State, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cleanup drops the database and every role named with o's prefix; it is
// safe to run repeatedly.
func cleanup(ctx context.Context, server *pgx.Conn, o options) error {
	return scratchdb.Drop(ctx, server, o.Database, o.RolePrefix)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }
