package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/rtmx-ai/tenancy/internal/scratchdb"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func main() {
	def := os.Getenv("TENANCY_WORKER_ADMIN_URL")
	if def == "" {
		def = "postgres://postgres@127.0.0.1:5432/postgres"
	}
	adminURL := flag.String("admin-url", def, "connection string of a PostgreSQL superuser")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := demo(ctx, os.Stdout, uniqueOptions(*adminURL)); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// demoLockClass is the first key of the advisory lock a demo run holds,
// for its whole life, on its database's name: a database of the demo's
// naming whose lock is free belongs to a run that died.
const demoLockClass = 0x74776b72

// demoDatabase matches the names uniqueOptions gives.
var demoDatabase = regexp.MustCompile(`^tenancy_worker_([0-9a-f]{8})$`)

// demo is run with the names of uniqueOptions, guarded by an advisory
// lock, after it dropped what runs that were killed left behind.
func demo(ctx context.Context, out io.Writer, o options) error {
	guard, err := pgx.Connect(ctx, o.AdminURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL, or pass -admin-url (or TENANCY_WORKER_ADMIN_URL)", scratchdb.Target(o.AdminURL), err)
	}
	defer guard.Close(context.WithoutCancel(ctx))
	if _, err := guard.Exec(ctx, `SELECT pg_advisory_lock($1, hashtext($2))`, demoLockClass, o.Database); err != nil {
		return err
	}
	rows, err := guard.Query(ctx, `SELECT datname FROM pg_database WHERE datname ~ '^tenancy_worker_[0-9a-f]{8}$' AND datname <> $1`, o.Database)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, name := range names {
		m := demoDatabase.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		var free bool
		if err := guard.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, demoLockClass, name).Scan(&free); err != nil {
			return err
		}
		if !free {
			continue // a run in progress
		}
		if err := cleanup(ctx, guard, options{Database: name, RolePrefix: "tw" + m[1] + "_"}); err != nil {
			return err
		}
		fmt.Fprintf(out, "dropped database %s and roles tw%s_*, left by a run that was killed\n", name, m[1])
		if _, err := guard.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, demoLockClass, name); err != nil {
			return err
		}
	}
	return run(ctx, out, o)
}

// demoSeed is each demo tenant's requirements.
var demoSeed = map[string][][2]string{
	"acme":   {{"REQ-DEPLOY-004", "COMPLETE"}, {"REQ-SEC-002", "PARTIAL"}, {"REQ-UI-010", "COMPLETE"}},
	"globex": {{"REQ-API-001", "MISSING"}},
}

// run is the demo: two tenants' jobs run, each in its own tenant; a forged
// job and a replayed one are refused and recorded; everything is dropped
// at the end.
func run(ctx context.Context, out io.Writer, o options) (err error) {
	p := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	acme, globex := tenant.MustParseID("acme"), tenant.MustParseID("globex")
	s, err := openStack(ctx, o, []tenant.ID{acme, globex}, nil)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.close(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			p("\ncleaned up: River stopped, database %s and roles %s* dropped", o.Database, o.RolePrefix)
		}
	}()
	p("tenancy worker: database %s; River %s on schema %s, logged in as %squeue; tenants %s and %s\n",
		o.Database, "v0.51", queueSchema, o.RolePrefix, acme, globex)
	for _, id := range []tenant.ID{acme, globex} {
		tctx := tenant.NewContext(ctx, id)
		for _, r := range demoSeed[id.String()] {
			if _, err := s.db.Exec(tctx, `INSERT INTO requirements (req_id, requirement_text, status) VALUES ($1, $2, $3)`, r[0], "requirement "+r[0], r[1]); err != nil {
				return err
			}
		}
	}

	// 1. A request of each tenant enqueues a recount: the enqueuer seals
	//    the request's tenant into the job's envelope.
	results := map[tenant.ID]int64{}
	for _, id := range []tenant.ID{acme, globex} {
		res, err := Enqueue(tenant.NewContext(ctx, id), s.enqueuer, Recount{Label: "nightly " + id.String()}, nil)
		if err != nil {
			return err
		}
		row, err := s.waitFinal(ctx, res.Job.ID)
		if err != nil {
			return err
		}
		results[id] = res.Job.ID
		p("job %d (recount_requirements, queue %s) enqueued as tenant %s: %s", row.ID, row.Queue, id, row.State)
	}

	// 2. Someone with write access to the queue re-aims acme's job at
	//    globex: the envelope's tenant is edited. Refused, not run.
	env, err := s.carrier.Seal(tenant.NewContext(ctx, acme), tenant.Job{
		ID: newJobID(), Audience: audience(river.QueueDefault, Recount{}.Kind()), Expires: time.Now().Add(time.Minute),
		Payload: []byte(`{"label":"forged"}`),
	})
	if err != nil {
		return err
	}
	forged, err := editEnvelope(env, func(e map[string]any) { e["tenant"] = globex.String() })
	if err != nil {
		return err
	}
	res, err := s.client.Insert(ctx, Args[Recount]{Envelope: forged}, nil)
	if err != nil {
		return err
	}
	row, err := s.waitFinal(ctx, res.Job.ID)
	if err != nil {
		return err
	}
	p("job %d: acme's envelope with its tenant edited to globex, inserted directly: %s", row.ID, row.State)

	// 3. acme's completed job is inserted again, envelope and all.
	done, err := s.client.JobGet(ctx, results[acme])
	if err != nil {
		return err
	}
	var replay Args[Recount]
	if err := json.Unmarshal(done.EncodedArgs, &replay); err != nil {
		return err
	}
	res, err = s.client.Insert(ctx, replay, nil)
	if err != nil {
		return err
	}
	if row, err = s.waitFinal(ctx, res.Job.ID); err != nil {
		return err
	}
	p("job %d: job %d's args inserted again (a replay): %s", row.ID, done.ID, row.State)

	// 4. No tenant in the context: nothing is queued.
	_, err = Enqueue(ctx, s.enqueuer, Recount{Label: "no tenant"}, nil)
	p("enqueue without a tenant\n  -> %v", err)
	if !errors.Is(err, tenant.ErrNoTenant) {
		return fmt.Errorf("expected tenant.ErrNoTenant, got %v", err)
	}

	// What ran where: each tenant's recounts, read as that tenant.
	for _, id := range []tenant.ID{acme, globex} {
		p("\nas tenant %s: SELECT ... FROM requirement_recounts", id)
		if err := printRecounts(ctx, out, s.db, id); err != nil {
			return err
		}
	}
	// What was refused: the refusal table in the queue's schema, written
	// by the queue's login, never by (or into) the tenant a job claims.
	refused, err := s.mw.Refusals(ctx)
	if err != nil {
		return err
	}
	p("\nrefused (%s.tenant_job_refused):", queueSchema)
	if err := printRefusals(out, refused); err != nil {
		return err
	}
	if len(refused) != 2 {
		return fmt.Errorf("expected 2 refusals, got %d", len(refused))
	}
	return nil
}

// printRefusals prints refused as a table. The claimed tenant is
// whatever a forged envelope says, unverified: it is printed quoted, as
// printable ASCII (strconv.QuoteToASCII), so that it cannot carry
// terminal escape sequences or control characters to the reader.
func printRefusals(out io.Writer, refused []Refusal) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  river_job_id\treason\tclaimed_tenant\tattempt\tdetail")
	for _, f := range refused {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\n", f.RiverJobID, f.Reason, strconv.QuoteToASCII(f.ClaimedTenant), f.Attempt, f.Detail)
	}
	return tw.Flush()
}

// printRecounts prints id's requirement_recounts, read as id.
func printRecounts(ctx context.Context, out io.Writer, db *store.DB, id tenant.ID) error {
	rows, err := db.Query(tenant.NewContext(ctx, id), `SELECT tenant_id, river_job_id, label, total, complete, login
		FROM requirement_recounts ORDER BY river_job_id`)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  tenant_id\triver_job_id\tlabel\ttotal\tcomplete\tlogin")
	var tid, label, login string
	var rid int64
	var total, complete int
	_, err = pgx.ForEachRow(rows, []any{&tid, &rid, &label, &total, &complete, &login}, func() error {
		if tid != id.String() {
			return fmt.Errorf("isolation broken: tenant %s saw a recount of %s", id, tid)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%d\t%s\n", tid, rid, label, total, complete, login)
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// editEnvelope decodes an envelope, applies edit to its fields and
// encodes it again, tag unchanged: a forgery.
func editEnvelope(env []byte, edit func(map[string]any)) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(env, &m); err != nil {
		return nil, err
	}
	edit(m)
	return json.Marshal(m)
}
