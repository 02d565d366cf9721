package audit_test

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkAppend measures the throughput of appending entries to a
// tenant's log, one op per entry, in batches of batch= entries per
// transaction, against the baseline mode=copy: pgx CopyFrom of rows of the
// same shape and size (MACs and all, computed beforehand) into a twin
// table with no row level security, triggers or lock, as the superuser,
// one COPY per batch. PostgreSQL refuses COPY FROM into a table under row
// level security (every tenant table is), so the log itself takes one
// INSERT ... SELECT FROM unnest(...) per batch.
//
//   - mode=copy: the baseline.
//
//   - mode=insert: the fastest way into a table where COPY is refused,
//     for reference: one INSERT ... SELECT FROM unnest(...) per batch, of
//     the same rows, into the same unprotected twin table.
//
//   - mode=append: Log.Append with batch events (validation, canonical
//     encoding, the chain's MACs, lock, head, INSERT, checkpoints).
//
//   - mode=writer: Writer.Append of one event at a time, MaxBatch batch,
//     and a Flush at the end: what a service does.
//
//     go test -run '^$' -bench Append -count 2 ./audit/ >> append.txt
//     go run golang.org/x/perf/cmd/benchstat@latest -col /mode append.txt
func BenchmarkAppend(b *testing.B) {
	e := newEnv(b, tenant.TierStandard)
	su := e.controlPlane(b)
	_, err := su.Exec(b.Context(), `CREATE SCHEMA IF NOT EXISTS auditbench;
		DROP TABLE IF EXISTS auditbench.audit_log_copy;
		CREATE TABLE auditbench.audit_log_copy (LIKE tenancy.platform_audit INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
		ALTER TABLE auditbench.audit_log_copy ADD COLUMN tenant_id text NOT NULL DEFAULT '', ADD PRIMARY KEY (tenant_id, seq)`)
	require.NoError(b, err)
	for _, batch := range []int{100, 1000} {
		evs := benchEvents(batch)
		b.Run(fmt.Sprintf("batch=%d/mode=copy", batch), func(b *testing.B) {
			rows := benchRows(batch)
			_, err := su.Exec(b.Context(), `TRUNCATE auditbench.audit_log_copy`)
			require.NoError(b, err)
			cols := []string{"tenant_id", "seq", "at", "actor", "action", "resource", "outcome", "details", "source_ip", "user_agent", "prev_mac", "mac"}
			seq := int64(0)
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				n := min(batch, b.N-done)
				for i := range n {
					seq++
					rows[i][1] = seq
				}
				_, err := su.CopyFrom(b.Context(), pgx.Identifier{"auditbench", "audit_log_copy"}, cols, pgx.CopyFromRows(rows[:n]))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
		b.Run(fmt.Sprintf("batch=%d/mode=insert", batch), func(b *testing.B) {
			rows := benchRows(batch)
			_, err := su.Exec(b.Context(), `TRUNCATE auditbench.audit_log_copy`)
			require.NoError(b, err)
			seq := int64(0)
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				n := min(batch, b.N-done)
				seqs, ats := make([]int64, n), make([]time.Time, n)
				strs := [7][]string{}
				for k := range strs {
					strs[k] = make([]string, n)
				}
				prevs, macs := make([][]byte, n), make([][]byte, n)
				for i, r := range rows[:n] {
					seq++
					seqs[i], ats[i], prevs[i], macs[i] = seq, r[2].(time.Time), r[10].([]byte), r[11].([]byte)
					strs[0][i], strs[1][i], strs[2][i], strs[3][i], strs[4][i] = r[3].(string), r[4].(string), r[5].(string), r[6].(string), r[7].(string)
					strs[5][i], strs[6][i] = r[8].(netip.Addr).String(), r[9].(string)
				}
				_, err := su.Exec(b.Context(), `INSERT INTO auditbench.audit_log_copy (seq, at, actor, action, resource, outcome, details, source_ip, user_agent, prev_mac, mac)
					SELECT s, a, ac, act, r, o, d::jsonb, NULLIF(ip, '')::inet, ua, pm, m
					FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
					            $9::text[], $10::bytea[], $11::bytea[]) AS u(s, a, ac, act, r, o, d, ip, ua, pm, m)`,
					seqs, ats, strs[0], strs[1], strs[2], strs[3], strs[4], strs[5], strs[6], prevs, macs)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
		b.Run(fmt.Sprintf("batch=%d/mode=append", batch), func(b *testing.B) {
			_, ctx := e.newTenant(b, "bench")
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				n := min(batch, b.N-done)
				if _, err := e.log.Append(ctx, evs[:n]...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
		b.Run(fmt.Sprintf("batch=%d/mode=writer", batch), func(b *testing.B) {
			_, ctx := e.newTenant(b, "bench")
			w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) {
				c.MaxBatch, c.MaxPending, c.FlushDelay = batch, 4*batch, time.Millisecond
			}))
			require.NoError(b, err)
			b.ResetTimer()
			for i := range b.N {
				if _, err := w.Append(ctx, evs[i%batch]); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			require.NoError(b, w.Close(ctx))
		})
	}
}

// benchEvents returns n typical events: a user, an action on a resource,
// a few details, an address and a user agent.
func benchEvents(n int) []audit.Event {
	evs := make([]audit.Event, n)
	for i := range evs {
		evs[i] = audit.Event{
			Actor: "user:alice@acme.example", Action: "requirement.update", Resource: fmt.Sprintf("requirements/REQ-DEPLOY-%03d", i%1000),
			Outcome: audit.OutcomeSuccess, Details: map[string]any{"field": "status", "from": "MISSING", "to": "COMPLETE", "request_id": fmt.Sprintf("%016x", i)},
			SourceIP: netip.MustParseAddr("198.51.100.7"), UserAgent: "rtmx-cli/0.9 (linux; amd64)",
		}
	}
	return evs
}

// benchRows returns n rows of the copy baseline: the fields of benchEvents
// in the columns' order, with MACs of the real size (37 bytes).
func benchRows(n int) [][]any {
	rows := make([][]any, n)
	prev := make([]byte, 37)
	at := time.Now().UTC().Truncate(time.Microsecond)
	for i, ev := range benchEvents(n) {
		mac := make([]byte, 37)
		_, _ = rand.Read(mac)
		rows[i] = []any{"bench", int64(0), at, ev.Actor, ev.Action, ev.Resource, string(ev.Outcome),
			fmt.Sprintf(`{"field":"status","from":"MISSING","request_id":"%016x","to":"COMPLETE"}`, i), ev.SourceIP, ev.UserAgent, prev, mac}
		prev = mac
	}
	return rows
}
