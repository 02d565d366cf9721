package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Placement kinds, one per tier.
const (
	kindSchema   = "schema"   // standard: schema tenant_<id> in the shared database
	kindDatabase = "database" // enterprise: a database of its own on the shared cluster
	kindCluster  = "cluster"  // government: a database of its own on a dedicated cluster
)

// placement says where a tenant's data lives. It is recorded in the
// directory (tenancy.tenants.placement) and never changes.
type placement struct {
	// Kind is kindSchema, kindDatabase or kindCluster.
	Kind string `json:"kind"`
	// Schema is the tenant's schema: tenant_<id> on every tier, so that
	// the same SQL (and the same migrations) serve every tenant.
	Schema string `json:"schema,omitempty"`
	// Database is the tenant's own database (RolePrefix + "tenant_" + id),
	// "" for the standard tier.
	Database string `json:"database,omitempty"`
	// Cluster is the registered name of the dedicated cluster, "" for the
	// shared one.
	Cluster string `json:"cluster,omitempty"`
	// Role is the tenant's login role; "" for a standard tenant in
	// ModeSharedPool. Tenants with a database of their own always have
	// one: a connection to that database serves that tenant only, so
	// the shared pool's reason to exist does not apply.
	Role string `json:"role,omitempty"`
}

// ownDatabase reports whether the tenant has a database of its own.
func (p placement) ownDatabase() bool { return p.Kind == kindDatabase || p.Kind == kindCluster }

// CreateOption adjusts [Admin.CreateTenant].
type CreateOption func(*createOptions)

type createOptions struct{ cluster string }

// OnCluster places a government-tier tenant on the dedicated cluster
// registered as name ([Admin.RegisterCluster]), in a database of its own.
// Other tiers refuse it: standard tenants live in the shared database,
// enterprise tenants in a database of their own on the shared cluster.
func OnCluster(name string) CreateOption { return func(o *createOptions) { o.cluster = name } }

var clusterNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// tenantDatabase is the name of the database of a tenant that has one.
// Database names are cluster-wide, like role names, so it carries the
// role prefix: RolePrefix (at most 16 bytes) + "tenant_" + the ID (at most
// 40) fits PostgreSQL's 63.
func (a *Admin) tenantDatabase(id tenant.ID) string { return a.rolePrefix + id.SchemaName() }

// place decides the placement of a new tenant of tier tier.
func (a *Admin) place(ctx context.Context, id tenant.ID, tier tenant.Tier, o createOptions) (placement, error) {
	p := placement{Schema: id.SchemaName()}
	switch tier {
	case tenant.TierStandard:
		p.Kind = kindSchema
	case tenant.TierEnterprise:
		p.Kind, p.Database = kindDatabase, a.tenantDatabase(id)
	case tenant.TierGovernment:
		p.Kind, p.Database, p.Cluster = kindCluster, a.tenantDatabase(id), o.cluster
	}
	switch {
	case o.cluster != "" && tier != tenant.TierGovernment:
		return p, fmt.Errorf("%w: option OnCluster: a %s tenant is not placed on a dedicated cluster (OnCluster is for the government tier)", ErrInvalidConfig, tier)
	case tier == tenant.TierGovernment && o.cluster == "":
		return p, fmt.Errorf("%w: option OnCluster: a government tenant lives on a dedicated cluster: pass store.OnCluster(name) with a cluster registered by Admin.RegisterCluster", ErrInvalidConfig)
	case o.cluster != "":
		var registered bool
		if err := a.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenancy.clusters WHERE name = $1)`, o.cluster).Scan(&registered); err != nil {
			return p, err
		}
		if !registered {
			return p, fmt.Errorf("%w: option OnCluster: cluster %q is not registered: call Admin.RegisterCluster first", ErrInvalidConfig, o.cluster)
		}
		if _, err := a.clusterPool(ctx, o.cluster); err != nil {
			return p, err
		}
	}
	if a.mode == ModeTenantLogin || p.ownDatabase() {
		role, err := a.secrets.roleName(a.rolePrefix, id)
		if err != nil {
			return p, err
		}
		p.Role = role
	}
	return p, nil
}

// AddCluster parses connString, the admin connection of the dedicated
// cluster name, into AdminConfig.Clusters: a role of that cluster with
// CREATEROLE and CREATEDB that owns every database on it (or a
// superuser), and a database to connect to for DDL (postgres, say).
func (c *AdminConfig) AddCluster(name, connString string) error {
	if !clusterNameRE.MatchString(name) {
		return fmt.Errorf("store: %w: cluster name %q must match [a-z][a-z0-9_]* and be at most 63 bytes", ErrInvalidConfig, name)
	}
	p, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return fmt.Errorf("store: %w: AdminConfig.Clusters[%q]: %w", ErrInvalidConfig, name, err)
	}
	p.MaxConns = 4
	if c.Clusters == nil {
		c.Clusters = map[string]*pgxpool.Config{}
	}
	c.Clusters[name] = p
	return nil
}

// AddCluster parses connString into Config.Clusters under name: the host,
// port, TLS and runtime settings with which tenant logins reach that
// cluster (user, password and database are each tenant's own).
func (c *Config) AddCluster(name, connString string) error {
	if !clusterNameRE.MatchString(name) {
		return fmt.Errorf("store: %w: cluster name %q must match [a-z][a-z0-9_]* and be at most 63 bytes", ErrInvalidConfig, name)
	}
	p, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return fmt.Errorf("store: %w: Config.Clusters[%q]: %w", ErrInvalidConfig, name, err)
	}
	if c.Clusters == nil {
		c.Clusters = map[string]*pgxpool.Config{}
	}
	c.Clusters[name] = p
	return nil
}

// RegisterCluster records the dedicated cluster name, whose admin
// connection is AdminConfig.Clusters[name], in the control plane, so that
// government tenants can be placed on it ([OnCluster]). It connects to the
// cluster, checks that it is not the shared cluster itself, and hardens
// every database on it that accepts connections (CONNECT and TEMPORARY
// revoked from PUBLIC, as [Admin.HardenDatabases] does), so that a tenant
// login there reaches its own database only. Registering a cluster again
// hardens it again.
func (a *Admin) RegisterCluster(ctx context.Context, name string) error {
	pool, err := a.clusterPool(ctx, name)
	if err != nil {
		return fmt.Errorf("store: register cluster %s: %w", name, err)
	}
	// Roles are cluster-wide: the group of this database's tenant logins
	// exists on the shared cluster, and on no other.
	var same bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, a.groupRole()).Scan(&same); err != nil {
		return fmt.Errorf("store: register cluster %s: %w", name, err)
	}
	if same {
		return fmt.Errorf("store: register cluster %s: %w: AdminConfig.Clusters[%q] reaches the shared cluster itself (role %s exists there): a dedicated cluster is another server", name, ErrInvalidConfig, name, q(a.groupRole()))
	}
	// A dedicated cluster is tenancy's: no database on it lets PUBLIC
	// connect (postgres, template1, the one the admin connects to), so a
	// tenant login reaches its own database only.
	rows, err := pool.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("store: register cluster %s: %w", name, err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("store: register cluster %s: %w", name, err)
	}
	for _, d := range dbs {
		if _, err := pool.Exec(ctx, `REVOKE CONNECT, TEMPORARY ON DATABASE `+q(d)+` FROM PUBLIC`); err != nil {
			return fmt.Errorf("store: register cluster %s: harden database %s (the cluster's admin must own every database on it, or be superuser): %w", name, q(d), err)
		}
	}
	if _, err := a.pool.Exec(ctx, `INSERT INTO tenancy.clusters (name) VALUES ($1) ON CONFLICT DO NOTHING`, name); err != nil {
		return fmt.Errorf("store: register cluster %s: %w", name, err)
	}
	a.log.InfoContext(ctx, "store: cluster registered", "cluster", name)
	return nil
}

// clusterPool returns the admin pool of the dedicated cluster name, opened
// on first use, or the Admin's own pool for "" (the shared cluster).
func (a *Admin) clusterPool(ctx context.Context, name string) (*pgxpool.Pool, error) {
	if name == "" {
		return a.pool, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.clusterPools[name]; ok {
		return p, nil
	}
	cfg, ok := a.clusters[name]
	if !ok {
		return nil, fmt.Errorf("%w: no admin connection for cluster %q: add it with AdminConfig.AddCluster", ErrInvalidConfig, name)
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("open the admin pool of cluster %s: %w", name, err)
	}
	if err := p.Ping(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("connect to cluster %s: %w", name, err)
	}
	a.clusterPools[name] = p
	return p, nil
}

// target is where DDL of one tenant runs: a pool on its database (the
// Admin's own for the standard tier) and its schema there.
type target struct {
	pool   *pgxpool.Pool
	schema string
	close  func()
}

// targetOf opens an admin pool on the database of a tenant placed at p.
// The caller must call close.
func (a *Admin) targetOf(ctx context.Context, p placement) (target, error) {
	if !p.ownDatabase() {
		return target{pool: a.pool, schema: p.Schema, close: func() {}}, nil
	}
	base := a.poolConfig
	if p.Cluster != "" {
		var ok bool
		if base, ok = a.clusters[p.Cluster]; !ok {
			return target{}, fmt.Errorf("%w: no admin connection for cluster %q: add it with AdminConfig.AddCluster", ErrInvalidConfig, p.Cluster)
		}
	}
	cfg := base.Copy()
	cfg.ConnConfig.Database = p.Database
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return target{}, fmt.Errorf("open an admin pool on database %s: %w", q(p.Database), err)
	}
	return target{pool: pool, schema: p.Schema, close: pool.Close}, nil
}

// placementOf reads the placement of tenant id in tx.
func placementOf(ctx context.Context, tx pgx.Tx, id tenant.ID) (placement, error) {
	var p placement
	err := tx.QueryRow(ctx, `SELECT placement FROM tenancy.tenants WHERE id = $1`, id.String()).Scan(&p)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrUnknownTenant
	}
	return p, err
}

// guardOf is the guard of the tables of tenant id placed at p.
func (a *Admin) guardOf(id tenant.ID, p placement) guard {
	if p.Role != "" {
		return tenantTableGuard(id, p.Role)
	}
	return sharedTableGuard(a.mode)
}

// workerOf is the role that gets privileges on the tables of a tenant
// placed at p: its login, or the shared login.
func (a *Admin) workerOf(p placement) string {
	if p.Role != "" {
		return p.Role
	}
	return a.sharedRole()
}

// HBARules returns pg_hba.conf lines that let each tenant login of this
// database reach only its own database on cluster ("" for the shared
// cluster), from address (a CIDR such as 10.0.0.0/8, or "all") with auth
// method method (scram-sha-256 in production):
//
//	host "<its database>" "<its login>" <address> <method>
//
// one per tenant with a database of its own there, and, on the shared
// cluster, one for the group of the standard tenants' logins on the shared
// database. Put them, in this order, after the lines of the admin and
// platform roles and before a line that rejects everyone else
// ("host all all all reject"), then reload the server
// (SELECT pg_reload_conf()). With them, a grant made by mistake (CONNECT
// to PUBLIC on a tenant database, say) still lets no tenant login in
// anywhere but its own database. Role names are opaque and database names
// carry the tenant ID, so pg_hba's sameuser cannot express this: the
// lines name each pair. Regenerate them after every CreateTenant and
// DropTenant of such tenants.
func (a *Admin) HBARules(ctx context.Context, cluster, address, method string) ([]string, error) {
	for field, v := range map[string]string{"address": address, "method": method} {
		if v == "" || strings.ContainsAny(v, " \t\n\r\"#") {
			return nil, fmt.Errorf("store: hba rules: %w: %s %q must be one pg_hba.conf field", ErrInvalidConfig, field, v)
		}
	}
	rows, err := a.pool.Query(ctx, `SELECT database, role_name FROM tenancy.tenant_logins
		WHERE database IS NOT NULL AND cluster IS NOT DISTINCT FROM NULLIF($1, '') ORDER BY tenant_id`, cluster)
	if err != nil {
		return nil, fmt.Errorf("store: hba rules: %w", err)
	}
	var lines []string
	var db, role string
	if _, err := pgx.ForEachRow(rows, []any{&db, &role}, func() error {
		lines = append(lines, fmt.Sprintf("host %q %q %s %s", db, role, address, method))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("store: hba rules: %w", err)
	}
	if cluster == "" {
		// A + marks a group; quoted, it would be part of the name.
		lines = append(lines, fmt.Sprintf("host %q +%s %s %s", a.dbName, a.groupRole(), address, method))
	}
	return lines, nil
}
