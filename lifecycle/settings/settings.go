package settings

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Settings reads and writes the settings of the tenant in the context,
// in that tenant's own placement (the table of [WithMigration]), through a
// store.DB: every call runs on the tenant's own connections, so neither
// a bug nor injected SQL reaches another tenant's settings. It is safe
// for concurrent use.
type Settings struct {
	db *store.DB
	km *keys.Manager

	mu      sync.Mutex // guards schemas and roles
	schemas map[schemaKey]*jsonschema.Schema
	roles   map[tenant.ID]cachedRoles
}

type schemaKey struct {
	tenant tenant.ID
	sum    [sha256.Size]byte
}

type cachedRoles struct {
	roles   *authz.Roles
	expires time.Time
}

// maxCached bounds the compiled schemas and role definitions cached; the
// cache is emptied when it is full.
const maxCached = 10_000

// RolesTTL is how long [Settings.Roles] serves a tenant's role
// definitions from memory: a change of the users section reaches the
// middleware within it.
const RolesTTL = 5 * time.Second

var _ authz.RoleSource = (*Settings)(nil)

// New returns the Settings of db, sealing secrets with km (a Manager over
// db.Keysets() serves requests; one with write access is not needed).
func New(db *store.DB, km *keys.Manager) (*Settings, error) {
	switch {
	case db == nil:
		return nil, fmt.Errorf("settings: %w: db is nil", ErrInvalidConfig)
	case km == nil:
		return nil, fmt.Errorf("settings: %w: keys manager is nil", ErrInvalidConfig)
	}
	return &Settings{db: db, km: km, schemas: map[schemaKey]*jsonschema.Schema{}, roles: map[tenant.ID]cachedRoles{}}, nil
}

// Revision is one version of one section's value.
type Revision struct {
	Section Section
	// Version numbers the section's revisions from 1.
	Version int64
	// Value is the section's value (RTM, Users, ...: the type of its
	// section). Its secrets are not in it: a set secret reads as a stored
	// Secret, which prints "[redacted]" and, put back, keeps the stored
	// value.
	Value Value
	// Actor is who made the revision, as given to Put.
	Actor string
	// Time is when it was made.
	Time time.Time
}

// binding is where the sealed secrets of a revision belong: the tenant
// (bound by keys) and the revision's row, so that sealed secrets copied to
// another tenant, section or version do not open.
func binding(s Section, version int64) keys.Binding {
	return keys.Binding{Table: table, Column: "sealed", RowKey: string(s) + "/" + strconv.FormatInt(version, 10)}
}

// namedSecret is one secret field of a value.
type namedSecret struct {
	name SecretName
	path string
	s    Secret
}

// secretsOf lists the secret fields of v.
func secretsOf(v Value) []namedSecret {
	var out []namedSecret
	switch v := v.(type) {
	case Integrations:
		if j := v.Jira; j != nil {
			out = append(out, namedSecret{SecretJiraAPIToken, "jira.api_token", j.APIToken})
		}
		if g := v.GitHub; g != nil {
			out = append(out, namedSecret{SecretGitHubToken, "github.token", g.Token},
				namedSecret{SecretGitHubPrivateKey, "github.private_key", g.PrivateKey})
		}
	case Notifications:
		for i, w := range v.Webhooks {
			out = append(out, namedSecret{WebhookSecret(w.Name), field(index("webhooks", i), "signing_secret"), w.SigningSecret})
		}
	}
	return out
}

// sectionOf returns the section that holds secret n.
func sectionOf(n SecretName) (Section, bool) {
	switch {
	case n == SecretJiraAPIToken || n == SecretGitHubToken || n == SecretGitHubPrivateKey:
		return SectionIntegrations, true
	case strings.HasPrefix(string(n), "webhooks.") && strings.HasSuffix(string(n), ".signing_secret"):
		return SectionNotifications, true
	}
	return "", false
}

// Put stores v (a section's value, or a pointer to one) as the next
// version of its section for the tenant of ctx,
// if the section is at version expect (0: never set), and returns the new
// version. actor names who makes the change (1 to 256 bytes of text).
//
// v is validated first: every problem at once in an [*Error] (errors.Is
// ErrInvalid), and nothing is written. A Branding on the standard tier
// fails with ErrTier. A section no longer at expect fails with ErrConflict:
// read it again, apply the change, and put it with the version read.
//
// Secrets: a new one (NewSecret) is sealed and stored; a stored one (as
// Get returns it) keeps the value of version expect; none (the zero
// Secret) removes it. Secrets are sealed with the tenant's data key,
// bound to the tenant and the revision ([keys.Binding]: table, column,
// section and version), and never written in the clear.
func (s *Settings) Put(ctx context.Context, v Value, expect int64, actor string) (int64, error) {
	if _, err := tenant.Require(ctx, "put"); err != nil {
		return 0, fmt.Errorf("settings: %w", err)
	}
	var p problems
	v = normalize(v)
	if v == nil {
		p.add("", "a value is required")
		return 0, p.err("")
	}
	sec := v.Section()
	if expect < 0 {
		p.add("", "the expected version must be 0 (never set) or more")
	}
	if r := checkText(actor, 1, 256); r != "" {
		p.add("", "the actor "+r)
	}
	v.check(&p)
	if err := p.err(sec); err != nil {
		return 0, err
	}
	if err := s.checkTier(ctx, sec); err != nil {
		return 0, fmt.Errorf("settings: put %s: %w", sec, err)
	}
	doc, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("settings: put %s: %w", sec, err)
	}
	if len(doc) > MaxValueBytes {
		p.add("", "must be at most "+strconv.Itoa(MaxValueBytes)+" bytes of JSON")
		return 0, p.err(sec)
	}
	latest, prevSealed, err := s.latestSealed(ctx, sec)
	if err != nil {
		return 0, fmt.Errorf("settings: put %s: %w", sec, err)
	}
	if latest != expect {
		return 0, fmt.Errorf("settings: put %s: %w: it is at version %d, not %d", sec, ErrConflict, latest, expect)
	}
	plain := map[SecretName]string{}
	var prev map[SecretName]string
	for _, ns := range secretsOf(v) {
		switch ns.s.state {
		case secretNew:
			plain[ns.name] = ns.s.value
		case secretKept:
			if prev == nil {
				if prev, err = s.open(ctx, sec, latest, prevSealed); err != nil {
					return 0, fmt.Errorf("settings: put %s: %w", sec, err)
				}
			}
			old, ok := prev[ns.name]
			if !ok {
				p.add(ns.path, "keeps the stored secret, but none is stored: give a new value")
				continue
			}
			plain[ns.name] = old
		}
	}
	if err := p.err(sec); err != nil {
		return 0, err
	}
	next := expect + 1
	sealed, err := s.seal(ctx, sec, next, plain)
	if err != nil {
		return 0, fmt.Errorf("settings: put %s: %w", sec, err)
	}
	_, err = s.db.Exec(ctx, `INSERT INTO tenant_settings (section, version, value, sealed, actor) VALUES ($1, $2, $3, $4, $5)`,
		string(sec), next, string(doc), sealed, actor)
	if err != nil {
		return 0, fmt.Errorf("settings: put %s: %w", sec, writeError(expect, err))
	}
	s.forgetRoles(ctx, sec)
	return next, nil
}

// normalize returns the value a pointer to a section's value points to
// (*Integrations holds the same secrets as Integrations), nil for a nil
// pointer, and v itself otherwise.
func normalize(v Value) Value {
	if v == nil {
		return nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		return rv.Elem().Interface().(Value)
	}
	return v
}

// checkTier refuses branding on the standard tier.
func (s *Settings) checkTier(ctx context.Context, sec Section) error {
	if sec != SectionBranding {
		return nil
	}
	info, err := s.db.Tenant(ctx)
	if err != nil {
		return err
	}
	if info.Tier != tenant.TierEnterprise && info.Tier != tenant.TierGovernment {
		return fmt.Errorf("%w: branding is for the enterprise and government tiers, and the tenant is on the %s tier", ErrTier, info.Tier)
	}
	return nil
}

// writeError maps a failed INSERT: another revision got there first.
func writeError(expect int64, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == conflictCode) {
		return fmt.Errorf("%w: another change made version %d first", ErrConflict, expect+1)
	}
	return notInstalled(err)
}

// notInstalled maps PostgreSQL's "undefined table" to ErrNotInstalled.
func notInstalled(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return fmt.Errorf("%w: %s", ErrNotInstalled, pgErr.Message)
	}
	return err
}

// latestSealed returns the latest version of sec (0 if none) and its
// sealed secrets.
func (s *Settings) latestSealed(ctx context.Context, sec Section) (int64, []byte, error) {
	var (
		v      int64
		sealed []byte
	)
	err := s.db.QueryRow(ctx, `SELECT version, sealed FROM tenant_settings WHERE section = $1 ORDER BY version DESC LIMIT 1`, string(sec)).Scan(&v, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read: %w", notInstalled(err))
	}
	return v, sealed, nil
}

// seal seals the secrets of a revision (nil for none).
func (s *Settings) seal(ctx context.Context, sec Section, version int64, plain map[SecretName]string) ([]byte, error) {
	if len(plain) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(plain)
	if err != nil {
		return nil, fmt.Errorf("seal the secrets: %w", err)
	}
	defer clear(b)
	ct, err := s.km.Seal(ctx, b, binding(sec, version))
	if err != nil {
		return nil, fmt.Errorf("seal the secrets of version %d: %w", version, err)
	}
	return ct, nil
}

// open opens the sealed secrets of a revision (an empty map for none).
func (s *Settings) open(ctx context.Context, sec Section, version int64, sealed []byte) (map[SecretName]string, error) {
	out := map[SecretName]string{}
	if sealed == nil {
		return out, nil
	}
	b, err := s.km.Open(ctx, sealed, binding(sec, version))
	if err != nil {
		return nil, fmt.Errorf("open the secrets of version %d: %w", version, err)
	}
	defer clear(b)
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("open the secrets of version %d: %w", version, keys.ErrDecrypt)
	}
	return out, nil
}

// Get returns the latest revision of section sec of the tenant of ctx, or
// an error wrapping ErrNotFound if it was never set. Its secrets are
// redacted (see [Revision]).
func (s *Settings) Get(ctx context.Context, sec Section) (Revision, error) {
	revs, err := s.query(ctx, "get", sec, `SELECT version, value, actor, created_at FROM tenant_settings WHERE section = $1 ORDER BY version DESC LIMIT 1`, string(sec))
	if err != nil {
		return Revision{}, err
	}
	if len(revs) == 0 {
		return Revision{}, fmt.Errorf("settings: get %s: %w", sec, ErrNotFound)
	}
	return revs[0], nil
}

// At returns version version of section sec, or an error wrapping
// ErrNotFound.
func (s *Settings) At(ctx context.Context, sec Section, version int64) (Revision, error) {
	revs, err := s.query(ctx, "at", sec, `SELECT version, value, actor, created_at FROM tenant_settings WHERE section = $1 AND version = $2`, string(sec), version)
	if err != nil {
		return Revision{}, err
	}
	if len(revs) == 0 {
		return Revision{}, fmt.Errorf("settings: at %s version %d: %w", sec, version, ErrNotFound)
	}
	return revs[0], nil
}

// History returns every revision of section sec, oldest first (none if
// it was never set).
func (s *Settings) History(ctx context.Context, sec Section) ([]Revision, error) {
	return s.query(ctx, "history", sec, `SELECT version, value, actor, created_at FROM tenant_settings WHERE section = $1 ORDER BY version`, string(sec))
}

// query reads revisions of sec.
func (s *Settings) query(ctx context.Context, op string, sec Section, sql string, args ...any) ([]Revision, error) {
	if _, err := tenant.Require(ctx, op); err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	if _, err := ParseSection(string(sec)); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("settings: %s %s: %w", op, sec, notInstalled(err))
	}
	type row struct {
		version int64
		value   []byte
		actor   string
		at      time.Time
	}
	var raw []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.version, &r.value, &r.actor, &r.at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("settings: %s %s: %w", op, sec, err)
		}
		raw = append(raw, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("settings: %s %s: %w", op, sec, notInstalled(err))
	}
	out := make([]Revision, 0, len(raw))
	for _, r := range raw {
		v, err := parseStored(sec, r.version, r.value)
		if err != nil {
			return nil, err
		}
		out = append(out, Revision{Section: sec, Version: r.version, Value: v, Actor: r.actor, Time: r.at})
	}
	return out, nil
}

// Secret returns the value of secret name in the latest revision of its
// section, opened, for the code that calls the integration (a Jira
// client, a webhook sender). It fails with ErrNotFound if the secret is
// not set, and with keys.ErrDecrypt if the sealed value does not open
// (it was sealed for another tenant or another revision). Never log what
// it returns.
func (s *Settings) Secret(ctx context.Context, name SecretName) (string, error) {
	if _, err := tenant.Require(ctx, "secret"); err != nil {
		return "", fmt.Errorf("settings: %w", err)
	}
	sec, ok := sectionOf(name)
	if !ok {
		return "", &Error{Problems: []Problem{{Rule: "secret " + quote(string(name)) + " is not one of the settings' secrets"}}}
	}
	version, sealed, err := s.latestSealed(ctx, sec)
	if err != nil {
		return "", fmt.Errorf("settings: secret %s of %s: %w", quote(string(name)), sec, err)
	}
	m, err := s.open(ctx, sec, version, sealed)
	if err != nil {
		return "", fmt.Errorf("settings: secret %s of %s: %w", quote(string(name)), sec, err)
	}
	v, ok := m[name]
	if !ok {
		return "", fmt.Errorf("settings: secret %s: %w", quote(string(name)), ErrNotFound)
	}
	return v, nil
}

// ValidateCustomFields checks doc, the custom fields of one record of the
// tenant of ctx (the jsonb column of a requirement), against the tenant's
// current custom-fields schema, before the service writes the record. It
// returns nil if doc matches, and otherwise an [*Error] (errors.Is
// ErrInvalidCustomFields) naming each problem at the JSON pointer of its
// value ("/severity"): a document over MaxCustomFieldsBytes, invalid,
// nesting deeper than MaxDepth, repeating a key, or not matching the
// schema. A tenant that has set no schema defines no custom fields: only
// an empty object (or null) passes.
//
// Compiled schemas are cached per tenant and schema.
func (s *Settings) ValidateCustomFields(ctx context.Context, doc json.RawMessage) error {
	id, err := tenant.Require(ctx, "validate custom fields")
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	p := problems{}
	fail := func() error {
		return &Error{Section: SectionCustomFields, Problems: p.list, kind: ErrInvalidCustomFields}
	}
	if len(doc) > MaxCustomFieldsBytes {
		p.add("", "must be at most "+strconv.Itoa(MaxCustomFieldsBytes)+" bytes of JSON")
		return fail()
	}
	if !scan(&p, "", doc, MaxDepth, pointerPaths) {
		return fail()
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		p.add("", "must be valid JSON")
		return fail()
	}
	var (
		raw     []byte
		version int64
	)
	err = s.db.QueryRow(ctx, `SELECT version, value FROM tenant_settings WHERE section = $1 ORDER BY version DESC LIMIT 1`, string(SectionCustomFields)).Scan(&version, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		if m, isObj := inst.(map[string]any); inst == nil || isObj && len(m) == 0 {
			return nil
		}
		p.add("", "must be empty: the tenant defines no custom fields")
		return fail()
	}
	if err != nil {
		return fmt.Errorf("settings: validate custom fields: %w", notInstalled(err))
	}
	sch, err := s.schema(id, version, raw)
	if err != nil {
		return err
	}
	if err := sch.Validate(inst); err != nil {
		recordProblems(&p, err)
		return fail()
	}
	return nil
}

// schema returns the compiled schema of a stored custom_fields value.
func (s *Settings) schema(id tenant.ID, version int64, raw []byte) (*jsonschema.Schema, error) {
	key := schemaKey{tenant: id, sum: sha256.Sum256(raw)}
	s.mu.Lock()
	sch, ok := s.schemas[key]
	s.mu.Unlock()
	if ok {
		return sch, nil
	}
	v, err := parseStored(SectionCustomFields, version, raw)
	if err != nil {
		return nil, err
	}
	var p problems
	sch, ok = compileSchema(&p, v.(CustomFields).Schema)
	if !ok { // not reached: parseStored compiled it
		return nil, &Error{Section: SectionCustomFields, Version: version, Problems: p.list}
	}
	s.mu.Lock()
	if len(s.schemas) >= maxCached {
		clear(s.schemas)
	}
	s.schemas[key] = sch
	s.mu.Unlock()
	return sch, nil
}

// parseStored parses a stored revision: one that breaks the rules (written
// around Put) is an *Error naming the version.
func parseStored(sec Section, version int64, raw []byte) (Value, error) {
	v, err := ParseValue(sec, raw)
	var ve *Error
	if errors.As(err, &ve) {
		ve.Version = version
		return nil, ve
	}
	return v, err
}

// Roles implements authz.RoleSource: the role definitions of the users
// section of tenant id (authz.DefaultRoles() if it has none), cached for
// RolesTTL. The middleware calls it with the token's tenant before the
// request's context carries it; a context that carries another tenant
// fails with tenant.ErrCrossTenant.
func (s *Settings) Roles(ctx context.Context, id tenant.ID) (*authz.Roles, error) {
	if cur, ok := tenant.FromContext(ctx); ok && cur != id {
		return nil, fmt.Errorf("settings: roles: %w", tenant.ErrCrossTenant)
	}
	if id.IsZero() {
		return nil, fmt.Errorf("settings: roles: %w", tenant.ErrNoTenant)
	}
	now := time.Now()
	s.mu.Lock()
	c, ok := s.roles[id]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.roles, nil
	}
	rev, err := s.Get(tenant.NewContext(ctx, id), SectionUsers)
	var roles *authz.Roles
	switch {
	case errors.Is(err, ErrNotFound):
		roles = authz.DefaultRoles()
	case err != nil:
		return nil, err
	default:
		if roles, err = rev.Value.(Users).AuthzRoles(); err != nil {
			return nil, fmt.Errorf("settings: roles: %w", err)
		}
	}
	s.mu.Lock()
	if len(s.roles) >= maxCached {
		clear(s.roles)
	}
	s.roles[id] = cachedRoles{roles: roles, expires: now.Add(RolesTTL)}
	s.mu.Unlock()
	return roles, nil
}

// forgetRoles drops the cached roles of the tenant of ctx after a change
// of its users (in this process; others' expire within RolesTTL).
func (s *Settings) forgetRoles(ctx context.Context, sec Section) {
	if sec != SectionUsers {
		return
	}
	id, _ := tenant.FromContext(ctx)
	s.mu.Lock()
	delete(s.roles, id)
	s.mu.Unlock()
}

// Record is one revision of one section with its secrets in the clear:
// what [Settings.Export] gives and [Settings.Import] takes, the unit of a
// tenant's backup.
//
// Printed with fmt, logged with slog or encoded with encoding/json (alone
// or in a slice), a Record shows its secrets redacted. Only
// [EncodeArchive] writes them in the clear, so that a backup restores
// them: write its output only into an archive encrypted to a backup key.
type Record struct {
	Section Section `json:"section"`
	Version int64   `json:"version"`
	// Value is the section's JSON document, as stored: each set secret is
	// "[redacted]" there, and its value is in Secrets.
	Value json.RawMessage `json:"value"`
	// Secrets are the revision's secrets, by name (new Secrets, holding
	// their values).
	Secrets map[SecretName]Secret `json:"secrets,omitempty"`
	Actor   string                `json:"actor"`
	Time    time.Time             `json:"time"`
}

// recordJSON is a Record as an archive holds it, its secrets in the clear.
type recordJSON struct {
	Section Section               `json:"section"`
	Version int64                 `json:"version"`
	Value   json.RawMessage       `json:"value"`
	Secrets map[SecretName]string `json:"secrets,omitempty"`
	Actor   string                `json:"actor"`
	Time    time.Time             `json:"time"`
}

// EncodeArchive writes recs as JSON with their secrets IN THE CLEAR, for
// a backup archive encrypted to a backup key (lifecycle.SettingsPart);
// DecodeArchive reads it back. Nothing else writes secrets in the clear.
func EncodeArchive(w io.Writer, recs []Record) error {
	out := make([]recordJSON, 0, len(recs))
	for _, r := range recs {
		j := recordJSON{Section: r.Section, Version: r.Version, Value: r.Value, Actor: r.Actor, Time: r.Time}
		if len(r.Secrets) > 0 {
			j.Secrets = make(map[SecretName]string, len(r.Secrets))
			for n, s := range r.Secrets {
				j.Secrets[n] = s.value
			}
		}
		out = append(out, j)
	}
	return json.NewEncoder(w).Encode(out)
}

// DecodeArchive reads what EncodeArchive wrote, strictly (unknown fields
// are an error).
func DecodeArchive(r io.Reader) ([]Record, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var in []recordJSON
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("settings: decode archive: %w", err)
	}
	out := make([]Record, 0, len(in))
	for _, j := range in {
		rec := Record{Section: j.Section, Version: j.Version, Value: j.Value, Actor: j.Actor, Time: j.Time}
		if len(j.Secrets) > 0 {
			rec.Secrets = make(map[SecretName]Secret, len(j.Secrets))
			for n, v := range j.Secrets {
				rec.Secrets[n] = NewSecret(v)
			}
		}
		out = append(out, rec)
	}
	return out, nil
}

// LogValue logs the record without its secrets' values.
func (r Record) LogValue() slog.Value {
	return slog.GroupValue(slog.String("section", string(r.Section)), slog.Int64("version", r.Version),
		slog.Any("secrets", slices.Sorted(maps.Keys(r.Secrets))), slog.String("actor", r.Actor), slog.Time("time", r.Time))
}

// Export returns every revision of every section of the tenant of ctx,
// by section and version, with their secrets opened: for the tenant's
// backup (see [Record] on keeping it). A sealed value that does not open
// fails the export.
func (s *Settings) Export(ctx context.Context) ([]Record, error) {
	return s.export(ctx, s.db, table)
}

// Querier runs a query: a *store.DB, a *store.Tx or a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ExportFrom is Export reading the rows through q from the settings
// table in schema (the tenant's, tenant_<id>) rather than through the
// tenant's own connection: for a backup, which reads a suspended tenant
// (whose logins are stopped) in one snapshot as the backup role
// (store.Admin.BackupTx). It reads only the rows of the tenant of ctx:
// the backup role bypasses row level security, and in the shared-pool
// mode another tenant may have written rows (with its own tenant_id) into
// this schema's table. The secrets are opened with the tenant's keys.
func (s *Settings) ExportFrom(ctx context.Context, q Querier, schema string) ([]Record, error) {
	return s.export(ctx, q, pgx.Identifier{schema, table}.Sanitize())
}

// Empty reports whether the tenant of ctx has no settings at all, without
// opening any (a restore asks before it writes).
func (s *Settings) Empty(ctx context.Context) (bool, error) {
	if _, err := tenant.Require(ctx, "empty"); err != nil {
		return false, fmt.Errorf("settings: %w", err)
	}
	var any bool
	if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenant_settings)`).Scan(&any); err != nil {
		return false, fmt.Errorf("settings: empty: %w", notInstalled(err))
	}
	return !any, nil
}

func (s *Settings) export(ctx context.Context, q Querier, qualified string) ([]Record, error) {
	id, err := tenant.Require(ctx, "export")
	if err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	rows, err := q.Query(ctx, `SELECT section, version, value, sealed, actor, created_at FROM `+qualified+` WHERE tenant_id = $1 ORDER BY section, version`, id.String())
	if err != nil {
		return nil, fmt.Errorf("settings: export: %w", notInstalled(err))
	}
	type row struct {
		r      Record
		sealed []byte
	}
	var raw []row
	for rows.Next() {
		var (
			r   row
			sec string
		)
		if err := rows.Scan(&sec, &r.r.Version, &r.r.Value, &r.sealed, &r.r.Actor, &r.r.Time); err != nil {
			rows.Close()
			return nil, fmt.Errorf("settings: export: %w", err)
		}
		r.r.Section = Section(sec)
		raw = append(raw, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("settings: export: %w", notInstalled(err))
	}
	out := make([]Record, 0, len(raw))
	for _, r := range raw {
		m, err := s.open(ctx, r.r.Section, r.r.Version, r.sealed)
		if err != nil {
			return nil, fmt.Errorf("settings: export %s: %w", r.r.Section, err)
		}
		if len(m) > 0 {
			r.r.Secrets = make(map[SecretName]Secret, len(m))
			for n, v := range m {
				r.r.Secrets[n] = NewSecret(v)
			}
		}
		out = append(out, r.r)
	}
	return out, nil
}

// Import writes recs, the records of another tenant's Export (its
// backup), as the settings of the tenant of ctx, which must have none
// (ErrNotEmpty otherwise): every section's history with its versions,
// actors and times, and the secrets sealed again under this tenant's key
// and rows. The records are checked first, all problems at once in an
// [*Error] with paths "records[i]...": each value as [ParseValue] checks
// it, each section's versions 1, 2, 3, ... (in any order), each set secret
// of a value given in Secrets and no other; branding needs the enterprise
// or government tier (ErrTier). Either every record is written or none.
func (s *Settings) Import(ctx context.Context, recs []Record) error {
	if _, err := tenant.Require(ctx, "import"); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	var p problems
	type item struct {
		r   Record
		doc []byte
	}
	items := make([]item, 0, len(recs))
	versions := map[Section][]int64{}
	branding := false
	for i, r := range recs {
		path := index("records", i)
		if _, err := ParseSection(string(r.Section)); err != nil {
			p.add(field(path, "section"), "must be one of rtm, custom_fields, users, integrations, notifications, branding")
			continue
		}
		branding = branding || r.Section == SectionBranding
		if r := checkText(r.Actor, 1, 256); r != "" {
			p.add(field(path, "actor"), r)
		}
		v, err := ParseValue(r.Section, r.Value)
		var ve *Error
		if errors.As(err, &ve) {
			for _, q := range ve.Problems {
				p.add(field(field(path, "value"), q.Path), q.Rule)
			}
			continue
		}
		names := map[SecretName]bool{}
		for _, ns := range secretsOf(v) {
			if !ns.s.IsSet() {
				continue
			}
			names[ns.name] = true
			if _, ok := r.Secrets[ns.name]; !ok {
				p.add(field(field(path, "value"), ns.path), "is set, but the record's secrets lack its value")
			}
		}
		for n, sv := range r.Secrets {
			if !names[n] {
				p.add(field(path, "secrets"), "holds "+quote(string(n))+", which the value does not set")
			}
			if sv.state != secretNew {
				p.add(field(field(path, "secrets"), string(n)), "must hold the secret's value (NewSecret)")
				continue
			}
			checkSecret(&p, field(field(path, "secrets"), string(n)), sv, true)
		}
		versions[r.Section] = append(versions[r.Section], r.Version)
		doc, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("settings: import: %w", err)
		}
		items = append(items, item{r: r, doc: doc})
	}
	for _, sec := range Sections() {
		vs := versions[sec]
		slices.Sort(vs)
		for i, v := range vs {
			if v != int64(i+1) {
				p.add("records", "the versions of "+string(sec)+" must be 1 to "+strconv.Itoa(len(vs))+", each once")
				break
			}
		}
	}
	if err := p.err(""); err != nil {
		return err
	}
	if branding {
		if err := s.checkTier(ctx, SectionBranding); err != nil {
			return fmt.Errorf("settings: import: %w", err)
		}
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := strings.Compare(string(a.r.Section), string(b.r.Section)); c != 0 {
			return c
		}
		return int(a.r.Version - b.r.Version)
	})
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		var any bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenant_settings)`).Scan(&any); err != nil {
			return notInstalled(err)
		}
		if any {
			return ErrNotEmpty
		}
		for _, it := range items {
			plain := make(map[SecretName]string, len(it.r.Secrets))
			for n, sv := range it.r.Secrets {
				plain[n] = sv.value
			}
			sealed, err := s.seal(ctx, it.r.Section, it.r.Version, plain)
			if err != nil {
				return fmt.Errorf("%s: %w", it.r.Section, err)
			}
			at := it.r.Time
			if at.IsZero() {
				at = time.Now()
			}
			if _, err := tx.Exec(ctx, `INSERT INTO tenant_settings (section, version, value, sealed, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
				string(it.r.Section), it.r.Version, string(it.doc), sealed, it.r.Actor, at); err != nil {
				return notInstalled(err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("settings: import: %w", err)
	}
	s.forgetRoles(ctx, SectionUsers)
	return nil
}
