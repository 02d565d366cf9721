package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// PlacementStep is REQ-DEPLOY-004's step 2: the tenant's schema, database
// or cluster placement, by tier, with every tenant migration
// (store.Admin.CreateTenant), recorded in the directory as provisioning
// until the run ends. Compensation removes it and leaves the tenant
// failed (store.Admin.FailTenant); deprovisioning drops it
// (store.Admin.DropTenant), leaving the tenant deleted.
type PlacementStep struct {
	// Admin is the control plane.
	Admin *store.Admin
	// GovernmentCluster names the registered dedicated cluster
	// (store.Admin.RegisterCluster) government tenants are placed on.
	// A government request fails the step without it.
	GovernmentCluster string
}

// Name returns "placement".
func (s *PlacementStep) Name() string { return "placement" }

// Describe says what the step does for t.
func (s *PlacementStep) Describe(t *Target) string {
	if t.Op != OpProvision {
		return "drop the tenant's schema or database, its rows in shared tables and its login role"
	}
	switch t.Info.Tier {
	case tenant.TierEnterprise:
		return "create database " + t.ID().SchemaName() + " with the tenant's login role and migrations"
	case tenant.TierGovernment:
		return "create database " + t.ID().SchemaName() + " on dedicated cluster " + s.GovernmentCluster + " with the tenant's login role and migrations"
	}
	return "create schema " + t.ID().SchemaName() + " with the tenant's login role and migrations"
}

// Apply creates the placement; a placement this run made before is done.
func (s *PlacementStep) Apply(ctx context.Context, t *Target) error {
	info := t.Info
	info.State = tenant.StateProvisioning
	var opts []store.CreateOption
	if info.Tier == tenant.TierGovernment {
		if s.GovernmentCluster == "" {
			return fmt.Errorf("%w: PlacementStep.GovernmentCluster is not set, so there is no cluster for government tenant %s", ErrInvalidConfig, info.ID)
		}
		opts = append(opts, store.OnCluster(s.GovernmentCluster))
	}
	err := s.Admin.CreateTenant(ctx, info, opts...)
	if errors.Is(err, store.ErrTenantExists) {
		// The run checked that the ID was free when it began, and only
		// one run of a tenant is open at a time: a tenant in state
		// provisioning is this run's, from before a crash.
		cur, terr := s.Admin.Tenant(ctx, info.ID)
		if terr == nil && cur.State == tenant.StateProvisioning {
			return nil
		}
	}
	return err
}

// Remove fails (compensation) or drops (deprovisioning) the placement.
// Compensation leaves alone a tenant that is not provisioning, requested
// or failed: one that is active (or suspended, ...) was never this run's
// (a second request for an ID whose first provisioning won the race).
func (s *PlacementStep) Remove(ctx context.Context, t *Target) error {
	var err error
	if t.Op == OpCompensate {
		ours, oerr := s.undoable(ctx, t)
		if oerr != nil || !ours {
			return oerr
		}
		err = s.Admin.FailTenant(ctx, t.ID())
	} else {
		err = s.Admin.DropTenant(ctx, t.ID())
	}
	if errors.Is(err, store.ErrUnknownTenant) {
		return nil // never placed, or dropped before a crash
	}
	return err
}

// Remains asks the servers what is left (store.Admin.Remains); on
// compensation, nothing of a tenant that is not the run's (see Remove).
func (s *PlacementStep) Remains(ctx context.Context, t *Target) ([]string, error) {
	if t.Op == OpCompensate {
		if ours, err := s.undoable(ctx, t); err != nil || !ours {
			return nil, err
		}
	}
	return s.Admin.Remains(ctx, t.ID())
}

// undoable reports whether the tenant's placement is a provisioning run's to
// undo: the directory has it requested, provisioning or failed. One that
// is active (or suspended, ...) was never this run's, and one the
// directory lacks was never placed.
func (s *PlacementStep) undoable(ctx context.Context, t *Target) (bool, error) {
	info, err := s.Admin.Tenant(ctx, t.ID())
	switch {
	case errors.Is(err, store.ErrUnknownTenant):
		return false, nil
	case err != nil:
		return false, err
	}
	switch info.State {
	case tenant.StateProvisioning, tenant.StateRequested, tenant.StateFailed:
		return true, nil
	}
	return false, nil
}

// KeysStep is REQ-DEPLOY-004's step 3: the tenant's keysets (data, blob,
// audit), wrapped by the master key the request's settings.encryption
// names (Settings.KeyOptions). Removing it crypto-shreds them
// (keys.Manager.Shred), compensation included: a tenant ID is never
// provisioned again, and keys that never protected data lose nothing.
type KeysStep struct {
	// Keys makes and shreds the keysets.
	Keys *keys.Manager
	// Store is where Keys keeps them (store.Admin.Keysets(), say), asked
	// by Remains whether any is left.
	Store keys.Store
	// CustomerKey, if set, decides in the validation phase whether the
	// tenant may use the customer-managed key of its request
	// (settings.kms_key_arn): a request names an ARN, and nothing in it
	// proves the key is the customer's. Check the ARN's account against
	// the accounts on record for the customer, say; an error refuses the
	// request before anything is made. Nil accepts any key Config.
	// CustomerKMS serves, which works only if the key's policy grants the
	// platform its use.
	CustomerKey func(ctx context.Context, id tenant.ID, arn string) error
}

// Name returns "keys".
func (s *KeysStep) Name() string { return "keys" }

// HoldsKeys marks KeysStep as a KeyStep: deprovisioning removes it last.
func (s *KeysStep) HoldsKeys() {}

// Describe says what the step does for t.
func (s *KeysStep) Describe(t *Target) string {
	if t.Request == nil || t.Op != OpProvision {
		return "shred the tenant's keysets"
	}
	switch t.Request.Settings.Encryption {
	case EncryptionCustomer:
		return "generate the tenant's keysets, wrapped by the customer's key " + t.Request.Settings.KMSKeyARN
	case EncryptionDedicated:
		return "generate the tenant's keysets, wrapped by a master key made for it alone"
	}
	return "generate the tenant's keysets, wrapped by the platform's master key"
}

// Validate refuses a customer key that CustomerKey refuses, and an ID
// that has keysets or a tombstone already: the platform's own keysets (its audit key, its backup key) live under IDs
// that are not tenants, and a tenant of that ID would otherwise get, and
// on deprovisioning shred, the platform's keys.
func (s *KeysStep) Validate(ctx context.Context, t *Target) error {
	if s.CustomerKey != nil && t.Request != nil && t.Request.Settings.Encryption == EncryptionCustomer {
		if err := s.CustomerKey(ctx, t.ID(), t.Request.Settings.KMSKeyARN); err != nil {
			return fmt.Errorf("settings.kms_key_arn: the tenant may not use this key: %w", err)
		}
	}
	for _, p := range keys.Purposes() {
		_, err := s.Store.Get(ctx, t.ID(), p)
		switch {
		case err == nil:
			return fmt.Errorf("%w: keysets exist for %s already (an ID the platform keeps keys under, or a leftover): choose another ID", ErrTenantExists, t.ID())
		case errors.Is(err, keys.ErrKeyDestroyed):
			return fmt.Errorf("%w: the keys of %s were shredded: tenant IDs are never reused; choose another", ErrTenantExists, t.ID())
		case !errors.Is(err, keys.ErrNoKeys):
			return err
		}
	}
	return nil
}

// Apply provisions the keysets (idempotent in keys).
func (s *KeysStep) Apply(ctx context.Context, t *Target) error {
	if t.Request == nil {
		return errors.New("keys: the run has no provisioning request")
	}
	return s.Keys.Provision(ctx, t.ID(), t.Request.Settings.KeyOptions())
}

// Remove shreds the keysets.
func (s *KeysStep) Remove(ctx context.Context, t *Target) error {
	_, err := s.Keys.Shred(ctx, t.ID())
	return err
}

// Remains lists the keysets left.
func (s *KeysStep) Remains(ctx context.Context, t *Target) ([]string, error) {
	var out []string
	for _, p := range keys.Purposes() {
		_, err := s.Store.Get(ctx, t.ID(), p)
		switch {
		case err == nil:
			out = append(out, string(p)+" keyset")
		case errors.Is(err, keys.ErrKeyDestroyed), errors.Is(err, keys.ErrNoKeys):
		default:
			return nil, err
		}
	}
	return out, nil
}

// ObjectsStep keeps the tenant's objects: it applies nothing (a tenant's
// prefix needs no making), and deprovisioning it purges every object under
// the tenant's prefix (blob.Buckets.Purge). It refuses a provisioning if
// objects already lie under the new tenant's prefix, which would otherwise
// become the new tenant's, and then leaves them alone.
type ObjectsStep struct {
	// Buckets is the platform's object storage.
	Buckets *blob.Buckets
}

// Name returns "objects".
func (s *ObjectsStep) Name() string { return "objects" }

// Describe says what the step does for t.
func (s *ObjectsStep) Describe(t *Target) string {
	if t.Op != OpProvision {
		return "purge every object under " + blob.TenantPrefix(t.ID())
	}
	return "check that nothing lies under " + blob.TenantPrefix(t.ID())
}

// Validate refuses an ID whose prefix holds objects.
func (s *ObjectsStep) Validate(ctx context.Context, t *Target) error { return s.Apply(ctx, t) }

// Apply checks the tenant's prefix is empty.
func (s *ObjectsStep) Apply(ctx context.Context, t *Target) error {
	left, err := s.Buckets.Remains(ctx, t.ID(), 1)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("objects already lie under %s (%q...): they would become the new tenant's; remove them first", blob.TenantPrefix(t.ID()), left[0])
	}
	return nil
}

// Remove purges the tenant's objects when deprovisioning. Compensation
// removes nothing: a provisioning writes no objects (the tenant is not
// active until it ends), so whatever lies under the prefix then is not
// the run's to delete.
func (s *ObjectsStep) Remove(ctx context.Context, t *Target) error {
	if t.Op == OpCompensate {
		return nil
	}
	_, err := s.Buckets.Purge(ctx, t.ID())
	return err
}

// Remains lists up to ten objects left (none on compensation: see Remove).
func (s *ObjectsStep) Remains(ctx context.Context, t *Target) ([]string, error) {
	if t.Op == OpCompensate {
		return nil, nil
	}
	left, err := s.Buckets.Remains(ctx, t.ID(), 10)
	for i := range left {
		left[i] = fmt.Sprintf("object %q", left[i])
	}
	return left, err
}

// RoutesStep is REQ-DEPLOY-004's step 6, DNS and routing: the tenant's
// hostnames, from templates, recorded in the control plane's route table
// (tenancy.routes), which the platform's ingress or DNS controller reads.
// A host is unique across tenants: a template that would give two tenants
// one host fails the second's provisioning. For a dedicated ingress of
// the enterprise tier, add the Kubernetes ingress step as well.
type RoutesStep struct {
	// Admin is the control plane.
	Admin *store.Admin
	// Hosts are text/template templates of the tenant's hostnames,
	// executed with the tenant's ID, DNSLabel, Tier, Region and Name
	// ("{{.DNSLabel}}.rtmx.example"). At least one.
	Hosts []string
	// Target is where the routes lead (the service that serves tenants).
	Target string
	// Reserved are hostnames that are never a tenant's (the platform's
	// own: api.rtmx.example, www..., login...): a tenant ID that would
	// make one (a tenant named api) is refused. Exact names, lower case.
	Reserved []string

	parsed []*template.Template
}

// NewRoutesStep parses the host templates.
func NewRoutesStep(admin *store.Admin, target string, hosts ...string) (*RoutesStep, error) {
	s := &RoutesStep{Admin: admin, Hosts: hosts, Target: target}
	if admin == nil {
		return nil, fmt.Errorf("%w: RoutesStep: Admin is required", ErrInvalidConfig)
	}
	if len(hosts) == 0 || target == "" {
		return nil, fmt.Errorf("%w: RoutesStep: at least one host template and a target are required", ErrInvalidConfig)
	}
	for i, h := range hosts {
		tm, err := template.New("host").Option("missingkey=error").Parse(h)
		if err != nil {
			return nil, fmt.Errorf("%w: RoutesStep.Hosts[%d]: %v", ErrInvalidConfig, i, err)
		}
		s.parsed = append(s.parsed, tm)
	}
	return s, nil
}

// Name returns "routes".
func (s *RoutesStep) Name() string { return "routes" }

// Describe says what the step does for t.
func (s *RoutesStep) Describe(t *Target) string {
	if t.Op != OpProvision {
		return "delete the tenant's routes"
	}
	hosts, err := s.hosts(t)
	if err != nil {
		return "routes: " + err.Error()
	}
	return "route " + strings.Join(hosts, ", ") + " to " + s.Target
}

// hostData is what host templates see.
type hostData struct {
	ID, DNSLabel, Tier, Region, Name string
}

// hosts returns the tenant's hostnames, each checked as a DNS name.
func (s *RoutesStep) hosts(t *Target) ([]string, error) {
	if len(s.parsed) != len(s.Hosts) {
		return nil, fmt.Errorf("%w: make RoutesStep with NewRoutesStep", ErrInvalidConfig)
	}
	d := hostData{ID: t.ID().String(), DNSLabel: t.ID().DNSLabel(), Tier: string(t.Info.Tier), Region: t.Info.Region, Name: t.Info.Name}
	var out []string
	for i, tm := range s.parsed {
		var b bytes.Buffer
		if err := tm.Execute(&b, d); err != nil {
			return nil, fmt.Errorf("host template %d: %w", i, err)
		}
		h := b.String()
		if !validHost(h) {
			return nil, fmt.Errorf("host template %d gives %q, which is not a DNS name of lower-case labels", i, h)
		}
		if slices.Contains(s.Reserved, h) {
			return nil, fmt.Errorf("host %s is reserved for the platform: choose another tenant ID", h)
		}
		out = append(out, h)
	}
	return out, nil
}

// validHost reports whether h is a DNS name of lower-case LDH labels.
func validHost(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Validate refuses hostnames that are not DNS names or are routed to
// another tenant.
func (s *RoutesStep) Validate(ctx context.Context, t *Target) error {
	hosts, err := s.hosts(t)
	if err != nil {
		return err
	}
	return s.Admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT host FROM tenancy.routes WHERE host = ANY($1) AND tenant_id <> $2 ORDER BY 1`, hosts, t.ID().String())
		if err != nil {
			return err
		}
		taken, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(taken) > 0 {
			return fmt.Errorf("host %s is routed to another tenant already", strings.Join(taken, ", "))
		}
		return nil
	})
}

// Apply records the routes; routes this tenant has already are kept.
func (s *RoutesStep) Apply(ctx context.Context, t *Target) error {
	hosts, err := s.hosts(t)
	if err != nil {
		return err
	}
	return s.Admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		for _, h := range hosts {
			var owner string
			err := tx.QueryRow(ctx, `INSERT INTO tenancy.routes (tenant_id, host, target) VALUES ($1, $2, $3)
				ON CONFLICT (host) DO UPDATE SET target = EXCLUDED.target WHERE tenancy.routes.tenant_id = EXCLUDED.tenant_id
				RETURNING tenant_id`, t.ID().String(), h, s.Target).Scan(&owner)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("host %s is routed to another tenant already", h)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// Remove deletes the tenant's routes.
func (s *RoutesStep) Remove(ctx context.Context, t *Target) error {
	return s.Admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM tenancy.routes WHERE tenant_id = $1`, t.ID().String())
		return err
	})
}

// Remains lists the tenant's routes left.
func (s *RoutesStep) Remains(ctx context.Context, t *Target) ([]string, error) {
	hosts, err := Routes(ctx, s.Admin, t.ID())
	for i := range hosts {
		hosts[i] = "route " + hosts[i]
	}
	return hosts, err
}

// Routes returns the hosts routed to tenant id, from the control plane.
func Routes(ctx context.Context, admin *store.Admin, id tenant.ID) ([]string, error) {
	var out []string
	err := admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT host FROM tenancy.routes WHERE tenant_id = $1 ORDER BY host`, id.String())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}

// AuditStep is REQ-DEPLOY-004's step 8: the provisioning's entry in the
// platform's audit trail (audit.Platform), once per run: a resumed run
// finds the entry it wrote. An audit trail is append-only, so removing
// the step (compensation, deprovisioning) deletes nothing; compensation
// appends a failure entry (tenant.provision.undo) naming the run, and the
// deletion record of a deprovisioning is the Lifecycle's own
// (Config.Audit). Put it last: the entry says the tenant was provisioned.
type AuditStep struct {
	// Admin is the control plane the trail is kept in.
	Admin *store.Admin
	// Platform is the platform's trail.
	Platform *audit.Platform
	// Actor names who provisions; "lifecycle" if empty.
	Actor string
}

// Name returns "audit".
func (s *AuditStep) Name() string { return "audit" }

// Describe says what the step does for t.
func (s *AuditStep) Describe(t *Target) string {
	if t.Op != OpProvision {
		return "nothing: the platform trail is append-only"
	}
	return "record tenant.provision for " + t.ID().String() + " in the platform audit trail"
}

func (s *AuditStep) actor() string {
	if s.Actor == "" {
		return "lifecycle"
	}
	return s.Actor
}

// Apply appends the provisioning's entry, unless the run wrote it before.
func (s *AuditStep) Apply(ctx context.Context, t *Target) error {
	return s.appendOnce(ctx, t, "tenant.provision", audit.OutcomeSuccess)
}

// Remove appends, on compensation of a run that wrote its entry, a
// failure entry that counters it. A run that wrote none (its Apply
// failed, the trail unavailable, say) has nothing to counter, so the
// trail being down does not keep compensation from finishing.
func (s *AuditStep) Remove(ctx context.Context, t *Target) error {
	if t.Op != OpCompensate {
		return nil
	}
	e, err := platformEntry(ctx, s.Admin, "tenant.provision", t.ID(), t.Run)
	if err != nil || e == nil {
		return err
	}
	return s.appendOnce(ctx, t, "tenant.provision.undo", audit.OutcomeFailure)
}

// Remains is nothing: the trail is the platform's, not the tenant's.
func (s *AuditStep) Remains(context.Context, *Target) ([]string, error) { return nil, nil }

func (s *AuditStep) appendOnce(ctx context.Context, t *Target, action string, outcome audit.Outcome) error {
	details := map[string]any{"tier": string(t.Info.Tier), "region": t.Info.Region}
	if t.Request != nil {
		details["encryption"] = string(t.Request.Settings.Encryption)
	}
	_, err := appendOnce(ctx, s.Admin, s.Platform, t.ID(), t.Run, audit.Event{Actor: s.actor(), Action: action, Outcome: outcome, Details: details})
	return err
}

// InvitationStep is REQ-DEPLOY-004's step 7: the invitation of the
// request's admin_email, over SMTP, with a single-use, expiring link whose
// token is stored only as a hash (lifecycle/invite). A resumed run sends no
// second mail once one was sent (see invite.Inviter.Send for the one
// window where a crash re-sends, with a fresh token). Removing it deletes
// the tenant's invitations, so an unredeemed link dies with the tenant.
type InvitationStep struct {
	// Inviter sends and keeps the invitations; call invite.Install first.
	Inviter *invite.Inviter
}

// Name returns "invitation".
func (s *InvitationStep) Name() string { return "invitation" }

// Describe says what the step does for t.
func (s *InvitationStep) Describe(t *Target) string {
	if t.Request == nil || t.Op != OpProvision {
		return "delete the tenant's invitations"
	}
	return "e-mail an invitation to " + t.Request.AdminEmail
}

// Apply sends the invitation (once).
func (s *InvitationStep) Apply(ctx context.Context, t *Target) error {
	if t.Request == nil {
		return errors.New("invitation: the run has no provisioning request")
	}
	return s.Inviter.Send(ctx, t.Info, t.Request.AdminEmail)
}

// Remove deletes the tenant's invitations.
func (s *InvitationStep) Remove(ctx context.Context, t *Target) error {
	return s.Inviter.Remove(ctx, t.ID())
}

// Remains lists the tenant's invitations left.
func (s *InvitationStep) Remains(ctx context.Context, t *Target) ([]string, error) {
	return s.Inviter.Remains(ctx, t.ID())
}

// KubeStep applies one group of the tenant's Kubernetes objects
// (lifecycle/kube): kube.Cluster.Namespace() is REQ-DEPLOY-004's step 4
// (the namespace tenant-<dns label> with the tenant's labels, a
// default-deny NetworkPolicy and the platform's allow rules, a
// ResourceQuota and a LimitRange by tier, and Istio's STRICT
// PeerAuthentication when configured), Resources() step 5 (the tenant's
// manifests), and Ingress() the dedicated ingress of the enterprise tier
// (part of step 6). Its name is the group's: namespace, resources or
// ingress.
type KubeStep struct {
	// Group is the group of objects.
	Group *kube.Group
}

// Name returns the group's name.
func (s *KubeStep) Name() string { return s.Group.Name() }

// Describe says what the step does for t.
func (s *KubeStep) Describe(t *Target) string {
	if t.Op != OpProvision {
		return "delete the Kubernetes " + s.Group.Name() + " of namespace " + kube.NamespaceName(t.ID())
	}
	return "Kubernetes " + s.Group.Name() + " of namespace " + kube.NamespaceName(t.ID())
}

// Validate refuses a tenant whose namespace exists already: someone
// else's, or one an earlier tenant of the ID left (kube.Group.Check).
// An API server it cannot ask refuses nothing: that is not the request's
// fault, and Apply, which refuses a foreign namespace too, then fails the
// step (and the provisioning compensates).
func (s *KubeStep) Validate(ctx context.Context, t *Target) error {
	err := s.Group.Check(ctx, t.Info)
	if errors.Is(err, kube.ErrForeignNamespace) || errors.Is(err, kube.ErrNamespaceExists) || errors.Is(err, kube.ErrInvalidTenant) {
		return err
	}
	return nil
}

// Apply applies the group (server-side apply: it converges).
func (s *KubeStep) Apply(ctx context.Context, t *Target) error { return s.Group.Apply(ctx, t.Info) }

// Remove deletes the group's objects (the namespace: and waits until it is gone).
func (s *KubeStep) Remove(ctx context.Context, t *Target) error { return s.Group.Remove(ctx, t.ID()) }

// Remains lists the group's objects left.
func (s *KubeStep) Remains(ctx context.Context, t *Target) ([]string, error) {
	return s.Group.Remains(ctx, t.ID())
}
