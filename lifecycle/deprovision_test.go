package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

// populate gives the tenant of ctx rows (one with a sealed column), two
// objects and three audit entries, and returns the objects' contents.
func (e *env) populate(t testing.TB, ctx context.Context) map[string]string {
	t.Helper()
	id, _ := tenant.FromContext(ctx)
	sealed, err := e.km.Seal(ctx, []byte("jira token of "+id.String()), keys.Binding{Table: "requirements", Column: "sealed", RowKey: "REQ-2"})
	require.NoError(t, err)
	e.insertReq(t, ctx, "REQ-1", "The system shall isolate tenants")
	_, err = e.db.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text, sealed) VALUES ('REQ-2', 'Keys are per tenant', $1)`, sealed)
	require.NoError(t, err)
	objs := map[string]string{"attachments/spec.pdf": "%PDF of " + id.String(), "exports/2026/database.csv": "req_id,status\nREQ-1,MISSING\n"}
	view, err := e.objects.For(ctx)
	require.NoError(t, err)
	defer view.Close()
	for k, v := range objs {
		require.NoError(t, view.WriteAll(ctx, k, []byte(v), nil))
	}
	_, err = e.settings.Put(ctx, &settings.Integrations{Jira: &settings.Jira{BaseURL: "https://acme.atlassian.net", Project: "RTMX",
		User: "bot@acme.defense", APIToken: settings.NewSecret("jira token of " + id.String())}}, 0, "alice")
	require.NoError(t, err)
	lcfg := audit.DefaultConfig()
	lcfg.DB, lcfg.Keys = e.db, e.km
	log, err := audit.New(lcfg)
	require.NoError(t, err)
	defer log.Close(context.WithoutCancel(ctx))
	for _, a := range []string{"requirement.create", "requirement.create", "attachment.upload"} {
		_, err := log.Append(ctx, audit.Event{Actor: "alice", Action: a, Resource: "REQ-1", Outcome: audit.OutcomeSuccess})
		require.NoError(t, err)
	}
	return objs
}

// TestDeprovisioningRemovesAllData is REQ-DEPLOY-004 test case 4, on the
// standard and enterprise tiers: after deprovisioning, each kind of thing
// the tenant had is asserted absent (placement, login role, keysets,
// objects, route, namespace on a real kube-apiserver, invitation), its
// keys are shredded, its connections refused, the
// platform trail holds a verified deletion record naming the backup's
// digest, and the backup restores into a fresh environment: the rows,
// the custom fields and the objects, while the column sealed under the
// shredded key stays unreadable.
// rtmx:req REQ-TEN-015
func TestDeprovisioningRemovesAllData(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, withKube(), withMail())
			req := request(t, "gone", tier)
			_, err := e.lc.Provision(t.Context(), req)
			require.NoError(t, err)
			ctx := tenant.NewContext(t.Context(), req.ID)
			objs := e.populate(t, ctx)
			rows := e.requirements(t, ctx)

			run, err := e.lc.Deprovision(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, lifecycle.RunSucceeded, run.State)

			// Each kind asserted absent.
			assert.Empty(t, e.remains(t, req.ID))
			left, err := e.admin.Remains(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Empty(t, left, "no schema, database or role")
			for _, p := range keys.Purposes() {
				_, err := e.admin.Keysets().Get(t.Context(), req.ID, p)
				assert.ErrorIs(t, err, keys.ErrKeyDestroyed, "keyset %s shredded", p)
			}
			objLeft, err := e.objects.Remains(t.Context(), req.ID, 10)
			require.NoError(t, err)
			assert.Empty(t, objLeft)
			routes, err := lifecycle.Routes(t.Context(), e.admin, req.ID)
			require.NoError(t, err)
			assert.Empty(t, routes)
			kc, _ := e.kubeClients(t)
			_, err = kc.CoreV1().Namespaces().Get(t.Context(), kube.NamespaceName(req.ID), metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "the namespace is gone: %v", err)
			invites, err := e.inviter.Remains(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Empty(t, invites)
			info, err := e.admin.Tenant(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, tenant.StateDeleted, info.State)
			_, _ = e.db.Exec(ctx, `SELECT 1`)
			_, err = e.db.Exec(ctx, `SELECT count(*) FROM requirements`)
			assert.Error(t, err, "the tenant's connections are refused")
			fresh := newManager(t, e.kekPath, e.db.Keysets())
			_, err = fresh.Seal(ctx, []byte("x"), keys.Binding{Table: "t", Column: "c", RowKey: "1"})
			assert.ErrorIs(t, err, keys.ErrKeyDestroyed)

			// The deletion record: once, verified, with the backup's digest.
			assert.Equal(t, 1, e.platformEntries(t, "tenant.deprovision", req.ID))
			_, err = e.platform.Verify(t.Context())
			require.NoError(t, err)
			var archive struct {
				Key, SHA256 string
				Size        int64
				Files       int
			}
			for _, s := range run.Steps {
				if s.Step == "backup" {
					require.NoError(t, jsonUnmarshal(s.Detail, &archive))
				}
			}
			require.NotEmpty(t, archive.Key)
			assert.Len(t, archive.SHA256, 64)
			assert.Contains(t, archive.Key, "backups/"+req.ID.String()+"/")
			assert.GreaterOrEqual(t, archive.Files, 4, "the tables, the objects and the settings")
			var raw []byte
			raw, err = os.ReadFile(filepath.Join(e.spec.BackupDir, filepath.FromSlash(archive.Key)))
			require.NoError(t, err)
			assert.Equal(t, archive.SHA256, sha256Hex(raw))
			assert.EqualValues(t, len(raw), archive.Size)
			for _, f := range []string{"jira token of", "The system shall isolate", "%PDF"} {
				assert.NotContains(t, string(raw), f, "the archive is encrypted")
			}

			// Restore into a fresh environment (its own control plane, keys and
			// objects), under the same ID, provisioned there anew.
			e2 := newEnv(t)
			_, err = e2.lc.Provision(t.Context(), req)
			require.NoError(t, err)
			res, err := e.backup.Restore(t.Context(), archive.Key, req.ID, lifecycle.RestoreTarget{DB: e2.db, Objects: e2.objects,
				Parts: []lifecycle.BackupPart{&lifecycle.SettingsPart{Settings: e2.settings}}})
			require.NoError(t, err)
			assert.Equal(t, req.ID.String(), res.Manifest.Tenant)
			assert.Len(t, res.Manifest.Files, archive.Files)
			assert.EqualValues(t, 2, res.Rows["requirements"])
			assert.Equal(t, 2, res.Objects)
			assert.Contains(t, res.Skipped, "rows/audit_log.jsonl")
			ctx2 := tenant.NewContext(t.Context(), req.ID)
			assert.Equal(t, rows, e2.requirements(t, ctx2))
			var custom string
			require.NoError(t, e2.db.QueryRow(ctx2, `SELECT custom->>'risk' FROM requirements WHERE req_id = 'REQ-1'`).Scan(&custom))
			assert.Equal(t, "high", custom)
			view, err := e2.objects.For(ctx2)
			require.NoError(t, err)
			for k, v := range objs {
				got, err := view.ReadAll(ctx2, k)
				require.NoError(t, err, k)
				assert.Equal(t, v, string(got))
			}
			view.Close()
			var sealed []byte
			require.NoError(t, e2.db.QueryRow(ctx2, `SELECT sealed FROM requirements WHERE req_id = 'REQ-2'`).Scan(&sealed))
			_, err = e2.km.Open(ctx2, sealed, keys.Binding{Table: "requirements", Column: "sealed", RowKey: "REQ-2"})
			assert.ErrorIs(t, err, keys.ErrDecrypt, "a value sealed under the shredded key stays unreadable")
			// The configuration came back through its part, its secret sealed anew.
			token, err := e2.settings.Secret(ctx2, settings.SecretJiraAPIToken)
			require.NoError(t, err)
			assert.Equal(t, "jira token of "+req.ID.String(), token)
			for _, f := range res.Manifest.Files {
				assert.NotEqual(t, "rows/tenant_settings.jsonl", f.Name, "the settings table is archived by its part, not dumped as ciphertext rows too")
			}

			// And into a new ID in the first environment.
			other := request(t, "restored", tenant.TierStandard)
			_, err = e.lc.Provision(t.Context(), other)
			require.NoError(t, err)
			_, err = e.lc.Restore(t.Context(), archive.Key, other.ID, lifecycle.RestoreTarget{DB: e.db, Objects: e.objects})
			require.NoError(t, err)
			assert.Equal(t, rows, e.requirements(t, tenant.NewContext(t.Context(), other.ID)))
			// The restore is in the platform trail, once, naming the archive.
			assert.Equal(t, 1, e.platformEntries(t, "tenant.restore", other.ID))
			var details string
			require.NoError(t, e.admin.ControlPlaneTx(t.Context(), func(tx pgx.Tx) error {
				return tx.QueryRow(t.Context(), `SELECT details::text FROM tenancy.platform_audit WHERE action = 'tenant.restore' AND resource = $1`,
					"tenant/"+other.ID.String()).Scan(&details)
			}))
			assert.JSONEq(t, fmt.Sprintf(`{"archive": %q, "from": %q, "from_run": %d, "rows": 2, "objects": 2}`, archive.Key, req.ID, run.ID), details)
			_, err = e.platform.Verify(t.Context())
			require.NoError(t, err)
		})
	}
}

// TestRestoreRefusesACorruptArchive: an archive with one byte changed,
// cut short, or renamed to another tenant's key is refused before
// anything is written.
func TestRestoreRefusesACorruptArchive(t *testing.T) {
	e := newEnv(t)
	req := request(t, "corrupt", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	e.populate(t, tenant.NewContext(t.Context(), req.ID))
	a, err := e.backup.BackupNow(t.Context(), req.ID)
	require.NoError(t, err)
	path := filepath.Join(e.spec.BackupDir, filepath.FromSlash(a.Key))
	good, err := os.ReadFile(path)
	require.NoError(t, err)

	into := request(t, "into", tenant.TierStandard)
	_, err = e.lc.Provision(t.Context(), into)
	require.NoError(t, err)
	ictx := tenant.NewContext(t.Context(), into.ID)
	for name, mutate := range map[string]func() string{
		"flipped byte": func() string {
			bad := append([]byte(nil), good...)
			bad[len(bad)/2] ^= 1
			require.NoError(t, os.WriteFile(path, bad, 0o600))
			return a.Key
		},
		"cut short": func() string {
			require.NoError(t, os.WriteFile(path, good[:len(good)-100], 0o600))
			return a.Key
		},
		"renamed to another tenant": func() string {
			require.NoError(t, os.WriteFile(path, good, 0o600))
			key := "backups/" + into.ID.String() + "/run-0.tar.enc"
			require.NoError(t, os.MkdirAll(filepath.Join(e.spec.BackupDir, "backups", into.ID.String()), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(e.spec.BackupDir, filepath.FromSlash(key)), good, 0o600))
			return key
		},
	} {
		t.Run(name, func(t *testing.T) {
			key := mutate()
			_, err := e.backup.Restore(t.Context(), key, into.ID, lifecycle.RestoreTarget{DB: e.db, Objects: e.objects})
			require.ErrorIs(t, err, lifecycle.ErrBackupCorrupt)
			assert.Empty(t, e.requirements(t, ictx), "nothing written")
		})
	}
	require.NoError(t, os.WriteFile(path, good, 0o600))
	for _, key := range []string{"../etc/passwd", "backups/../x", "backups/Not-An-ID/run-0.tar.enc"} {
		_, err := e.backup.Restore(t.Context(), key, into.ID, lifecycle.RestoreTarget{DB: e.db})
		assert.ErrorIs(t, err, lifecycle.ErrInvalidConfig, key)
	}
}

// TestBackupRoleMustBeReadOnlyAndBypassRLS: a backup role without
// BYPASSRLS, or one that could do more than read, is refused.
func TestBackupRoleMustBeReadOnlyAndBypassRLS(t *testing.T) {
	e := newEnv(t)
	req := request(t, "role", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	for name, attrs := range map[string]string{"no bypassrls": "NOLOGIN", "createrole": "NOLOGIN BYPASSRLS CREATEROLE", "createdb": "NOLOGIN BYPASSRLS CREATEDB",
		"login": "LOGIN BYPASSRLS", "member of pg_read_all_data": "NOLOGIN BYPASSRLS IN ROLE pg_read_all_data"} {
		t.Run(name, func(t *testing.T) {
			role := e.d.Prefix() + strings.ReplaceAll(name, " ", "_")
			e.d.Exec(t, `DO $$ BEGIN CREATE ROLE "`+role+`" `+attrs+`; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
			b := *e.backup
			b.Role = role
			_, err := b.BackupNow(t.Context(), req.ID)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "unsafe backup role")
		})
	}
	b := *e.backup
	b.Role = e.d.Prefix() + "nosuchrole"
	_, err = b.BackupNow(t.Context(), req.ID)
	assert.ErrorContains(t, err, "does not exist")
}

var _ = io.EOF

// TestStateChangesWaitForAnOpenRun: a tenant whose deprovisioning was
// stopped after its backup cannot be reactivated (it would write after
// the backup) or suspended; resuming finishes it.
func TestStateChangesWaitForAnOpenRun(t *testing.T) {
	e := newEnv(t)
	req := request(t, "stateful", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	crashAt(t, e, "deprovision", req.ID.String(), "decommission/apply/before")
	assert.ErrorIs(t, e.lc.Reactivate(t.Context(), req.ID), lifecycle.ErrRunInProgress)
	assert.ErrorIs(t, e.lc.Suspend(t.Context(), req.ID), lifecycle.ErrRunInProgress)
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateSuspended, info.State)
	_, err = e.lc.Resume(t.Context(), req.ID)
	require.NoError(t, err)
}

// TestRestoreIntoATenantWithRowsChangesNothing: a restore into a tenant
// that has rows is refused, and none of the archive's rows are written.
func TestRestoreIntoATenantWithRowsChangesNothing(t *testing.T) {
	e := newEnv(t)
	src := request(t, "src", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), src)
	require.NoError(t, err)
	e.populate(t, tenant.NewContext(t.Context(), src.ID))
	a, err := e.backup.BackupNow(t.Context(), src.ID)
	require.NoError(t, err)
	dst := request(t, "dst", tenant.TierStandard)
	_, err = e.lc.Provision(t.Context(), dst)
	require.NoError(t, err)
	dctx := tenant.NewContext(t.Context(), dst.ID)
	e.insertReq(t, dctx, "REQ-9", "mine")
	_, err = e.lc.Restore(t.Context(), a.Key, dst.ID, lifecycle.RestoreTarget{DB: e.db})
	require.ErrorContains(t, err, "has rows already")
	assert.Equal(t, map[string]string{"REQ-9": "mine"}, e.requirements(t, dctx))
	assert.Zero(t, e.platformEntries(t, "tenant.restore", dst.ID), "a refused restore is not recorded as one")

	// A tenant with no rows but objects, or settings, of its own.
	for name, give := range map[string]func(ctx context.Context){
		"objects": func(ctx context.Context) {
			view, err := e.objects.For(ctx)
			require.NoError(t, err)
			defer view.Close()
			require.NoError(t, view.WriteAll(ctx, "attachments/spec.pdf", []byte("mine"), nil))
		},
		"settings": func(ctx context.Context) {
			_, err := e.settings.Put(ctx, &settings.Notifications{}, 0, "me")
			require.NoError(t, err)
		},
	} {
		t.Run(name, func(t *testing.T) {
			other := request(t, "dst"+name, tenant.TierStandard)
			_, err := e.lc.Provision(t.Context(), other)
			require.NoError(t, err)
			octx := tenant.NewContext(t.Context(), other.ID)
			give(octx)
			_, err = e.backup.Restore(t.Context(), a.Key, other.ID, lifecycle.RestoreTarget{DB: e.db, Objects: e.objects})
			require.ErrorContains(t, err, "already")
			assert.Empty(t, e.requirements(t, octx), "no row written")
			if name == "objects" {
				view, err := e.objects.For(octx)
				require.NoError(t, err)
				got, err := view.ReadAll(octx, "attachments/spec.pdf")
				view.Close()
				require.NoError(t, err)
				assert.Equal(t, "mine", string(got), "its object is not overwritten")
			}
		})
	}
}

// peekPart is a BackupPart that, when the backup asks for it (after the
// rows and objects are staged), reads every staged file under dir.
type peekPart struct {
	dir  string
	seen []string
}

func (p *peekPart) Name() string { return "peek" }
func (p *peekPart) Export(_ context.Context, _ *lifecycle.Target, _ lifecycle.BackupSource, w io.Writer) error {
	err := filepath.WalkDir(p.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		p.seen = append(p.seen, string(b))
		return err
	})
	_, _ = io.WriteString(w, "{}")
	return err
}
func (p *peekPart) Import(context.Context, *lifecycle.Target, io.Reader) error { return nil }

// TestBackupStagesNoPlaintextAndRecordsBigTenants: while a backup is
// being written, its staged files on disk hold none of the tenant's
// plaintext (a crash then leaves only ciphertext whose key died with the
// process); and a tenant with many objects is deprovisioned with a
// deletion record that fits the audit trail (it names the archive, not
// its manifest).
func TestBackupStagesNoPlaintextAndRecordsBigTenants(t *testing.T) {
	e := newEnv(t)
	req := request(t, "staged", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	ctx := tenant.NewContext(t.Context(), req.ID)
	e.populate(t, ctx)
	view, err := e.objects.For(ctx)
	require.NoError(t, err)
	for i := range 200 {
		require.NoError(t, view.WriteAll(ctx, fmt.Sprintf("many/object-%03d.txt", i), []byte("secret body of "+req.ID.String()), nil))
	}
	view.Close()

	peek := &peekPart{dir: t.TempDir()}
	b := *e.backup
	b.TempDir, b.Parts = peek.dir, append(b.Parts, peek)
	lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: e.steps, Backup: &b, Audit: e.platform})
	require.NoError(t, err)
	run, err := lc.Deprovision(t.Context(), req.ID)
	require.NoError(t, err, "a tenant of 200 objects is deprovisioned, its deletion record written")
	assert.Equal(t, lifecycle.RunSucceeded, run.State)
	assert.Equal(t, 1, e.platformEntries(t, "tenant.deprovision", req.ID))
	require.NotEmpty(t, peek.seen, "the part saw the staged files")
	for _, f := range peek.seen {
		for _, plain := range []string{"The system shall isolate", "secret body of", "jira token of", "%PDF"} {
			assert.NotContains(t, f, plain, "a staged file holds plaintext")
		}
	}
	entries, err := os.ReadDir(peek.dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "the stage is removed afterwards")
}

// TestBackupRevokesWhatACrashedBackupLeft: grants a crashed backup left to
// the backup role (on another tenant's tables) are revoked by the next
// backup, which holds only its own tenant's while it reads.
func TestBackupRevokesWhatACrashedBackupLeft(t *testing.T) {
	e := newEnv(t)
	a, b := request(t, "crashed", tenant.TierStandard), request(t, "next", tenant.TierStandard)
	for _, r := range []*lifecycle.Request{a, b} {
		_, err := e.lc.Provision(t.Context(), r)
		require.NoError(t, err)
	}
	role := pgx.Identifier{e.backupRole}.Sanitize()
	schema := pgx.Identifier{a.ID.SchemaName()}.Sanitize()
	e.d.Exec(t, `GRANT USAGE ON SCHEMA `+schema+` TO `+role)
	e.d.Exec(t, `GRANT SELECT ON ALL TABLES IN SCHEMA `+schema+` TO `+role)
	_, err := e.backup.BackupNow(t.Context(), b.ID)
	require.NoError(t, err)
	var left bool
	require.NoError(t, e.admin.ControlPlaneTx(t.Context(), func(tx pgx.Tx) error {
		return tx.QueryRow(t.Context(), `SELECT has_table_privilege($1, $2, 'SELECT') OR has_table_privilege($1, $3, 'SELECT')`,
			e.backupRole, a.ID.SchemaName()+".requirements", b.ID.SchemaName()+".requirements").Scan(&left)
	}))
	assert.False(t, left, "no grant is left to the backup role")
}

// TestBackupHoldsOnlyTheTenantsRows: in the shared-pool mode a tenant's
// session may write rows of its own (with its tenant_id) into another
// tenant's tables; the backup role bypasses row level security, so the
// backup of the victim must filter them out, or they would restore as
// the victim's (a planted settings row, say, naming the attacker owner).
func TestBackupHoldsOnlyTheTenantsRows(t *testing.T) {
	e := newEnv(t, withSharedPool())
	mallory, victim := request(t, "mallory", tenant.TierStandard), request(t, "victim", tenant.TierStandard)
	for _, r := range []*lifecycle.Request{mallory, victim} {
		_, err := e.lc.Provision(t.Context(), r)
		require.NoError(t, err)
	}
	mctx, vctx := tenant.NewContext(t.Context(), mallory.ID), tenant.NewContext(t.Context(), victim.ID)
	e.insertReq(t, vctx, "REQ-1", "the victim's")
	vschema := pgx.Identifier{victim.ID.SchemaName()}.Sanitize()
	_, err := e.db.Exec(mctx, `INSERT INTO `+vschema+`.requirements (req_id, requirement_text) VALUES ('PLANT', 'planted by mallory')`)
	require.NoError(t, err, "the shared-pool mode lets this row of mallory's into the victim's table")
	_, err = e.db.Exec(mctx, `INSERT INTO `+vschema+`.tenant_settings (section, version, value, actor) VALUES ('users', 1, '{"users":[{"email":"mallory@evil.example","role":"owner"}]}', 'mallory')`)
	require.NoError(t, err)

	a, err := e.backup.BackupNow(t.Context(), victim.ID)
	require.NoError(t, err)
	fresh := request(t, "restored", tenant.TierStandard)
	_, err = e.lc.Provision(t.Context(), fresh)
	require.NoError(t, err)
	fctx := tenant.NewContext(t.Context(), fresh.ID)
	_, err = e.backup.Restore(t.Context(), a.Key, fresh.ID, lifecycle.RestoreTarget{DB: e.db, Objects: e.objects})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"REQ-1": "the victim's"}, e.requirements(t, fctx), "mallory's row is not the victim's")
	_, err = e.settings.Get(fctx, settings.SectionUsers)
	assert.ErrorIs(t, err, settings.ErrNotFound, "mallory's settings row is not restored as the victim's")
}
