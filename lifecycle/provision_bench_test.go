package lifecycle_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkProvision provisions standard-tier tenants without the
// Kubernetes and e-mail steps (placement, keys, objects check, route,
// audit entry, each journaled), and beside it the baseline: the same work
// done by calling store, keys and audit directly, without the journal.
// Each reports p50 and p99 of one tenant's provisioning.
//
//	go test -run '^$' -bench BenchmarkProvision -benchtime 200x ./lifecycle/
func BenchmarkProvision(b *testing.B) {
	e := newEnv(b)
	b.Run("lifecycle", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			req := request(b, "bench", tenant.TierStandard)
			start := time.Now()
			if _, err := e.lc.Provision(b.Context(), req); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportPercentiles(b, lat)
	})
	b.Run("baseline-direct", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			req := request(b, "base", tenant.TierStandard)
			start := time.Now()
			if err := provisionDirect(b.Context(), e, req.ID, req.Name, req.Region); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportPercentiles(b, lat)
	})
}

// provisionDirect does what the lifecycle's standard-tier steps do, with
// no journal: the tenant (active at once), its keysets, its route and the
// platform audit entry.
func provisionDirect(ctx context.Context, e *env, id tenant.ID, name, region string) error {
	if err := e.admin.CreateTenant(ctx, tenant.Info{ID: id, Name: name, Tier: tenant.TierStandard, Region: region}); err != nil {
		return err
	}
	if err := e.prov.Provision(ctx, id, keys.ProvisionOptions{}); err != nil {
		return err
	}
	if _, err := e.objects.Remains(ctx, id, 1); err != nil {
		return err
	}
	if err := e.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenancy.routes (tenant_id, host, target) VALUES ($1, $2, 'svc/rtmx-api')`, id.String(), id.DNSLabel()+".rtmx.example")
		return err
	}); err != nil {
		return err
	}
	_, err := e.platform.Append(ctx, audit.Event{Actor: "bench", Action: "tenant.provision", Resource: "tenant/" + id.String(), Outcome: audit.OutcomeSuccess})
	return err
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	pct := func(p float64) float64 {
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkProvisionFleet provisions TENANCY_BENCH_FLEET standard tenants
// (default 1000) one after another into one control plane and reports
// how the last ones compare with the first: the median of the first ten
// and of the last ten provisionings, and their ratio (target: at most
// 1.5); then the same for the baseline of BenchmarkProvision, in a fresh
// control plane.
//
//	go test -run '^$' -bench BenchmarkProvisionFleet -benchtime 1x ./lifecycle/
func BenchmarkProvisionFleet(b *testing.B) {
	n := 1000
	if v := os.Getenv("TENANCY_BENCH_FLEET"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			b.Fatalf("TENANCY_BENCH_FLEET=%q: want a number of at least 20", v)
		}
	}
	for b.Loop() {
		for _, mode := range []string{"lifecycle", "baseline-direct"} {
			e := newEnv(b)
			lat := make([]time.Duration, 0, n)
			for i := range n {
				req := request(b, fmt.Sprintf("fleet%d_", i), tenant.TierStandard)
				start := time.Now()
				var err error
				if mode == "lifecycle" {
					_, err = e.lc.Provision(b.Context(), req)
				} else {
					err = provisionDirect(b.Context(), e, req.ID, req.Name, req.Region)
				}
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			first, last := median(lat[:10]), median(lat[n-10:])
			b.ReportMetric(float64(first.Microseconds())/1000, mode+"-first10-p50-ms")
			b.ReportMetric(float64(last.Microseconds())/1000, mode+"-last10-p50-ms")
			b.ReportMetric(float64(last)/float64(first), mode+"-last/first")
		}
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkProvisionFull provisions enterprise tenants through every step
// a platform would run: placement (a database of its own), keys, the
// Kubernetes namespace, resources and dedicated ingress on a real
// kube-apiserver, the route, the invitation over real SMTP (mailpit) and
// the audit entry. The baseline is BenchmarkProvision's, for the standard
// tier without Kubernetes and e-mail.
//
//	go test -run '^$' -bench BenchmarkProvisionFull -benchtime 20x ./lifecycle/
func BenchmarkProvisionFull(b *testing.B) {
	e := newEnv(b, withKube(), withMail())
	var lat []time.Duration
	for b.Loop() {
		req := request(b, "full", tenant.TierEnterprise)
		start := time.Now()
		if _, err := e.lc.Provision(b.Context(), req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}
