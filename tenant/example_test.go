package tenant_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

func ExampleParseID() {
	id, err := tenant.ParseID("abc123")
	if err != nil {
		panic(err)
	}
	fmt.Println(id, id.SchemaName())

	// Hostile or sloppy input is rejected, never cleaned.
	for _, s := range []string{"Acme", "acme-corp", "a\nb"} {
		_, err := tenant.ParseID(s)
		fmt.Println(errors.Is(err, tenant.ErrInvalidID), err)
	}
	// Output:
	// abc123 tenant_abc123
	// true tenant: invalid tenant ID "Acme": must start with a lower-case ASCII letter (a-z)
	// true tenant: invalid tenant ID "acme-corp": may contain only lower-case ASCII letters, digits and underscores (byte 4 is '-')
	// true tenant: invalid tenant ID "a\nb": may contain only lower-case ASCII letters, digits and underscores (byte 1 is '\n')
}

func ExampleNewContext() {
	// At a boundary (here, a JWT claim already verified), parse and bind.
	id, err := tenant.ParseID("acme")
	if err != nil {
		panic(err)
	}
	ctx := tenant.NewContext(context.Background(), id)

	// Anywhere below, read it back.
	if got, ok := tenant.FromContext(ctx); ok {
		fmt.Println("tenant:", got)
	}
	_, ok := tenant.FromContext(context.Background())
	fmt.Println("tenant in Background:", ok)
	// Output:
	// tenant: acme
	// tenant in Background: false
}

func ExampleRequire() {
	query := func(ctx context.Context) error {
		id, err := tenant.Require(ctx, "store: list requirements")
		if err != nil {
			return err
		}
		fmt.Println("querying schema", id.SchemaName())
		return nil
	}

	_ = query(tenant.NewContext(context.Background(), tenant.MustParseID("acme")))
	err := query(context.Background())
	fmt.Println(errors.Is(err, tenant.ErrNoTenant))
	fmt.Println(err)
	// Output:
	// querying schema tenant_acme
	// true
	// store: list requirements: tenant: no tenant in context (put one there with tenant.NewContext)
}

func ExampleNewLogHandler() {
	text := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // drop the time so the output is stable
			}
			return a
		},
	})
	log := slog.New(tenant.NewLogHandler(text))

	ctx := tenant.NewContext(context.Background(), tenant.MustParseID("acme"))
	log.InfoContext(ctx, "requirement saved", "req", "REQ-DEPLOY-004")
	log.InfoContext(context.Background(), "platform started")
	// Output:
	// level=INFO msg="requirement saved" req=REQ-DEPLOY-004 tenant_id=acme
	// level=INFO msg="platform started"
}

func ExampleJobCarrier() {
	// In production the key comes from a secret store: 32 random bytes.
	key := bytes.Repeat([]byte{0x42}, tenant.MinJobKeyLen)
	jobs, err := tenant.NewJobCarrier(key)
	if err != nil {
		panic(err)
	}

	// The request handler queues a job for its tenant, for one queue, with
	// an ID and an expiry.
	reqCtx := tenant.NewContext(context.Background(), tenant.MustParseID("acme"))
	envelope, err := jobs.Seal(reqCtx, tenant.Job{
		ID:       "job-7f3a",
		Audience: "reindex",
		Expires:  time.Now().Add(time.Hour),
		Payload:  []byte(`{"reindex":"REQ-DEPLOY-004"}`),
	})
	if err != nil {
		panic(err)
	}

	// The worker of that queue restores the tenant before running the
	// job, and refuses one it has run before (here a map; in production a
	// unique key of the job table).
	ran := map[string]bool{}
	opts := tenant.OpenOptions{
		Audience: "reindex",
		Seen: func(_ context.Context, id tenant.ID, jobID string) (bool, error) {
			seen := ran[id.String()+"/"+jobID]
			ran[id.String()+"/"+jobID] = true
			return seen, nil
		},
	}
	ctx, job, err := jobs.Open(context.Background(), envelope, opts)
	if err != nil {
		panic(err)
	}
	id, _ := tenant.FromContext(ctx)
	fmt.Printf("tenant %s, job %s, payload %s\n", id, job.ID, job.Payload)

	// Replayed, it is refused; edited in the queue, too.
	_, _, err = jobs.Open(context.Background(), envelope, opts)
	fmt.Println(errors.Is(err, tenant.ErrJobReplayed))
	edited := bytes.Replace(envelope, []byte(`"tenant":"acme"`), []byte(`"tenant":"evil"`), 1)
	_, _, err = jobs.Open(context.Background(), edited, opts)
	fmt.Println(errors.Is(err, tenant.ErrJobTampered))

	fmt.Println(jobs) // never the key
	// Output:
	// tenant acme, job job-7f3a, payload {"reindex":"REQ-DEPLOY-004"}
	// true
	// true
	// tenant.JobCarrier(1 keys)
}

func ExampleState_Transition() {
	s := tenant.StateActive
	s, err := s.Transition(tenant.StateSuspended)
	fmt.Println(s, err)
	_, err = s.Transition(tenant.StateDeleted)
	fmt.Println(errors.Is(err, tenant.ErrIllegalTransition))
	// Output:
	// suspended <nil>
	// true
}
