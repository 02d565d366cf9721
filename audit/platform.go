package audit

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// PlatformLog is the name of the platform's trail in its entries ("log")
// and exports: not a tenant ID (tenant.ParseID refuses it).
const PlatformLog = "platform"

// PlatformConfig configures a [Platform] trail.
type PlatformConfig struct {
	// Admin holds the control plane, where the trail is kept
	// (tenancy.platform_audit, made by [Install]).
	Admin *store.Admin
	// Keys gives the platform's audit key: the audit MAC of KeyID.
	Keys *keys.Manager
	// KeyID names the keyset of the platform's audit key in Keys: an ID
	// provisioned with keys.Manager.Provision for the platform, never
	// placed as a tenant (NewPlatform refuses one in the directory). Its
	// key outlives every tenant, so that the trail of a tenant's
	// deprovisioning still verifies after the tenant's keys are shredded.
	KeyID tenant.ID
}

// Platform is the platform's own audit trail, in the control plane:
// provisioning, key rotation, re-wrapping, deprovisioning. Its entries
// have the format of a tenant's, with Log "platform", chained and MAC'd
// with the platform's audit key (see PlatformConfig.KeyID) rather than a
// tenant's. It is for the administrative side (it holds a store.Admin);
// it is safe for concurrent use.
type Platform struct {
	admin *store.Admin
	keys  *keys.Manager
	keyID tenant.ID
}

// NewPlatform checks cfg and returns the platform trail. It fails if
// cfg.KeyID is a tenant of the directory: a tenant's key must not sign
// the platform's trail, nor the platform's key be shredded with a tenant.
func NewPlatform(ctx context.Context, cfg PlatformConfig) (*Platform, error) {
	switch {
	case cfg.Admin == nil:
		return nil, fmt.Errorf("audit: %w: PlatformConfig.Admin is required", ErrInvalidConfig)
	case cfg.Keys == nil:
		return nil, fmt.Errorf("audit: %w: PlatformConfig.Keys is required", ErrInvalidConfig)
	case cfg.KeyID.IsZero():
		return nil, fmt.Errorf("audit: %w: PlatformConfig.KeyID is required", ErrInvalidConfig)
	}
	_, err := cfg.Admin.Tenant(ctx, cfg.KeyID)
	switch {
	case err == nil:
		return nil, fmt.Errorf("audit: %w: PlatformConfig.KeyID %s is a tenant's ID: give the platform's audit key an ID of its own", ErrInvalidConfig, cfg.KeyID)
	case !errors.Is(err, store.ErrUnknownTenant):
		return nil, fmt.Errorf("audit: platform trail: %w", err)
	}
	return &Platform{admin: cfg.Admin, keys: cfg.Keys, keyID: cfg.KeyID}, nil
}

func (p *Platform) mac(ctx context.Context) (*keys.MAC, error) {
	m, err := p.keys.MAC(tenant.NewContext(ctx, p.keyID))
	if err != nil {
		return nil, fmt.Errorf("the platform's audit key (%s): %w", p.keyID, err)
	}
	return m, nil
}

// Append writes events to the platform's trail, in one transaction, as
// consecutive entries, and returns them; see [Log.Append]. Name the
// tenant an operation concerns in the event (Resource "tenant/<id>", say).
func (p *Platform) Append(ctx context.Context, events ...Event) ([]Entry, error) {
	items := make([]*prepared, len(events))
	t := now()
	for i, ev := range events {
		var err error
		if items[i], err = prepare(PlatformLog, ev, t); err != nil {
			return nil, fmt.Errorf("audit: append to the platform trail: event %d: %w", i, err)
		}
	}
	if len(items) == 0 {
		return nil, nil
	}
	mac, err := p.mac(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: append to the platform trail: %w", err)
	}
	var w *written
	for attempt := 0; ; attempt++ {
		err = p.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
			b, err := lockedBatch(ctx, tx, platformTable, mac, items, freshPlan)
			if err == nil {
				w = &b.written
			}
			return err
		})
		if err == nil || attempt >= 5 || !lostRace(err) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("audit: append to the platform trail: %w", notInstalled(err, "run audit.Install"))
	}
	out := make([]Entry, len(items))
	for i, it := range items {
		out[i] = it.entry(PlatformLog, w.first+int64(i), w.prevOf(i), w.macs[i])
	}
	return out, nil
}

// scan reads the trail in one transaction.
func (p *Platform) scan(ctx context.Context, fn func(*Entry) error) error {
	return p.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		return scanLog(PlatformLog, func(after int64, limit int) (pgx.Rows, error) {
			rows, err := tx.Query(ctx, platformTable.scan, pgx.QueryExecModeExec, after, limit)
			if err != nil {
				return nil, notInstalled(err, "run audit.Install")
			}
			return rows, nil
		}, fn)
	})
}

// Verify recomputes the platform trail's chain with the platform's audit
// key and names the first broken entry, as [Log.Verify] does. The trail
// has no checkpoints: they would live in the same database, under the
// same owner, as the trail itself; anchor it elsewhere by exporting it
// ([Platform.Export]) to storage the database's administrators cannot
// rewrite.
func (p *Platform) Verify(ctx context.Context) (Report, error) {
	mac, err := p.mac(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify the platform trail: %w", err)
	}
	v, _ := newVerifier(PlatformLog, mac, nil)
	if err := p.scan(ctx, v.entry); err != nil {
		var ce *ChainError
		if errors.As(err, &ce) {
			return v.rep, err
		}
		return v.rep, fmt.Errorf("audit: verify the platform trail: %w", err)
	}
	return v.finish()
}

// Export writes the platform trail as JSON Lines, for [VerifyExport] with
// the platform's audit key; see [Log.Export].
func (p *Platform) Export(ctx context.Context, w io.Writer) (int64, error) {
	mac, err := p.mac(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit: export the platform trail: %w", err)
	}
	n, err := export(w, PlatformLog, mac, nil, func(fn func(*Entry) error) error { return p.scan(ctx, fn) })
	if err != nil {
		return n, fmt.Errorf("audit: export the platform trail: %w", err)
	}
	return n, nil
}
