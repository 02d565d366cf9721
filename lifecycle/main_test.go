package lifecycle_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	gcblob "gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/internal/kubetest"
	"github.com/rtmx-ai/tenancy/internal/mailtest"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m, kubetest.Cleanup) }

var secret = store.LoginSecret{Version: 1, Key: []byte("tenancy lifecycle test login secret, 32+ bytes")}

const (
	govCluster = "gov"
	// The keysets of the platform's audit key and of the backup key.
	platformKeyID = "platformaudit"
	backupKeyID   = "backupkey"
)

var (
	tenantSeq    atomic.Int64
	platformOnce sync.Once
	platformRole string
)

// env is one environment of the platform: a control plane (its own
// database), store, keys, objects, audit trail and backup bucket, and a
// Lifecycle over them. Two envs of one test are two environments: a
// backup of one restores into the other.
type env struct {
	t          testing.TB
	d          *pgtest.Database
	admin      *store.Admin
	db         *store.DB
	prov       *keys.Manager // over the admin's keysets
	km         *keys.Manager // over the platform's (read-only) keysets
	kekPath    string
	objects    *blob.Buckets
	spec       spec
	backupBkt  *gcblob.Bucket
	platform   *audit.Platform
	backup     *lifecycle.Backup
	backupRole string
	lc         *lifecycle.Lifecycle
	steps      []lifecycle.Step
	inviter    *invite.Inviter
	settings   *settings.Settings
	kube       *kube.Cluster
	mail       *mailtest.Server
	inviteSrv  *httptest.Server
}

type envOption func(*envConfig)

type envConfig struct {
	extra   []lifecycle.Step // after the built-in steps
	kekPath string           // the platform master key file; new if ""
	gov     bool             // register the second cluster for government tenants
	mail    bool             // add the invitation step, with a mailpit of its own
	kube    bool             // add the Kubernetes steps, on the package's kube-apiserver
	shared  bool             // store.ModeSharedPool
}

func withSteps(s ...lifecycle.Step) envOption {
	return func(c *envConfig) { c.extra = append(c.extra, s...) }
}
func withGov() envOption        { return func(c *envConfig) { c.gov = true } }
func withMail() envOption       { return func(c *envConfig) { c.mail = true } }
func withKube() envOption       { return func(c *envConfig) { c.kube = true } }
func withSharedPool() envOption { return func(c *envConfig) { c.shared = true } }

// reqTable is the tenant table of the tests: RTMX requirements with a
// jsonb column of custom fields, a bytea of a sealed value and an identity
// column.
const reqTable = `CREATE TABLE requirements (
	tenant_id text NOT NULL,
	req_id text NOT NULL,
	requirement_text text NOT NULL,
	custom jsonb NOT NULL DEFAULT '{}',
	sealed bytea,
	n bigint GENERATED ALWAYS AS IDENTITY,
	PRIMARY KEY (tenant_id, req_id)
);
`

// spec is what an env is made of, as strings, so that a child process
// (the crash tests) opens the same environment.
type spec struct {
	AdminURL, PlatformURL, SecondURL, Prefix, KEKPath, ObjDir, BackupDir, BackupRole string
	// SMTPAddr, if set, is the mail server of the invitation step, and
	// LinkBase the URL its links point at.
	SMTPAddr, LinkBase string
	// Kubeconfig, if set, is the kube-apiserver of the Kubernetes steps.
	Kubeconfig string
	// SharedPool puts the database in store.ModeSharedPool.
	SharedPool bool
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	var c envConfig
	for _, o := range opts {
		o(&c)
	}
	root := pgtest.DB(t)
	d := root.NewDatabase(t)
	platformOnce.Do(func() { platformRole = root.CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformRole)
	require.NoError(t, err)
	sp := spec{AdminURL: d.AdminURL(), PlatformURL: d.URL(pcfg.User, pcfg.Password), Prefix: d.Prefix(),
		KEKPath: c.kekPath, ObjDir: t.TempDir(), BackupDir: t.TempDir(), BackupRole: d.Prefix() + "backup"}
	if sp.KEKPath == "" {
		sp.KEKPath = filepath.Join(t.TempDir(), "platform.key")
	}
	// The backup role: BYPASSRLS and nothing else (the superuser admin of
	// the tests may switch to it).
	createRole := `DO $$ BEGIN CREATE ROLE ` + pgx.Identifier{sp.BackupRole}.Sanitize() + ` NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$`
	d.Exec(t, createRole)
	if c.gov {
		second := pgtest.SecondCluster(t)
		sp.SecondURL = second.AdminURL()
		second.Exec(t, createRole)
	}
	if c.kube {
		sp.Kubeconfig = kubetest.Shared(t).KubeconfigPath(t)
	}
	sp.SharedPool = c.shared
	var srv *httptest.Server
	var mail *mailtest.Server
	if c.mail {
		mail = mailtest.Start(t)
		sp.SMTPAddr = mail.SMTPAddr()
		// The invitation page; its handler is bound once the env is open.
		var h http.Handler
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
		t.Cleanup(srv.Close)
		sp.LinkBase = srv.URL + "/invite"
		e := openEnv(t, sp, c, true)
		h = e.inviter.Handler()
		e.d, e.mail, e.inviteSrv = d, mail, srv
		return e
	}
	e := openEnv(t, sp, c, true)
	e.d = d
	return e
}

// openEnv opens the environment of sp; first provisions its platform keys.
func openEnv(t testing.TB, sp spec, c envConfig, first bool) *env {
	t.Helper()
	e := &env{t: t, spec: sp}
	acfg, err := store.ParseAdminConfig(sp.AdminURL)
	require.NoError(t, err)
	pcfg, err := pgx.ParseConfig(sp.PlatformURL)
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole = sp.Prefix, pcfg.User
	if sp.SharedPool {
		acfg.Mode = store.ModeSharedPool
	}
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Migrations, err = audit.WithMigration(fstest.MapFS{"0001_requirements.sql": {Data: []byte(reqTable)}}, 2)
	require.NoError(t, err)
	acfg.Migrations, err = settings.WithMigration(acfg.Migrations, 3)
	require.NoError(t, err)
	cfg, err := store.ParseConfig(sp.PlatformURL, secret)
	require.NoError(t, err)
	if sp.SecondURL != "" {
		require.NoError(t, acfg.AddCluster(govCluster, sp.SecondURL))
		require.NoError(t, cfg.AddCluster(govCluster, sp.SecondURL))
	}
	ctx := t.Context()
	e.admin, err = store.OpenAdmin(ctx, acfg)
	require.NoError(t, err)
	t.Cleanup(e.admin.Close)
	if sp.SecondURL != "" {
		require.NoError(t, e.admin.RegisterCluster(ctx, govCluster))
	}
	require.NoError(t, audit.Install(ctx, e.admin))
	e.db, err = store.Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(e.db.Close)

	e.kekPath = sp.KEKPath
	e.prov = newManager(t, e.kekPath, e.admin.Keysets())
	e.km = newManager(t, e.kekPath, e.db.Keysets())
	if first {
		for _, id := range []string{platformKeyID, backupKeyID} {
			require.NoError(t, e.prov.Provision(ctx, tenant.MustParseID(id), keys.ProvisionOptions{}))
		}
	}
	e.platform, err = audit.NewPlatform(ctx, audit.PlatformConfig{Admin: e.admin, Keys: e.prov, KeyID: tenant.MustParseID(platformKeyID)})
	require.NoError(t, err)

	e.objects, err = blob.Open(ctx, "file://"+filepath.ToSlash(sp.ObjDir), e.prov)
	require.NoError(t, err)
	t.Cleanup(func() { e.objects.Close() })
	e.backupBkt, err = gcblob.OpenBucket(ctx, "file://"+filepath.ToSlash(sp.BackupDir))
	require.NoError(t, err)
	t.Cleanup(func() { e.backupBkt.Close() })
	e.backupRole = sp.BackupRole
	e.settings, err = settings.New(e.db, e.km)
	require.NoError(t, err)
	e.backup = &lifecycle.Backup{Admin: e.admin, Role: e.backupRole, Bucket: e.backupBkt, Keys: e.prov,
		KeyID: tenant.MustParseID(backupKeyID), Objects: e.objects, Parts: []lifecycle.BackupPart{&lifecycle.SettingsPart{Settings: e.settings}}}

	routes, err := lifecycle.NewRoutesStep(e.admin, "svc/rtmx-api", "{{.DNSLabel}}.rtmx.example")
	require.NoError(t, err)
	e.steps = []lifecycle.Step{
		&lifecycle.PlacementStep{Admin: e.admin, GovernmentCluster: govClusterIf(sp.SecondURL != "")},
		&lifecycle.KeysStep{Keys: e.prov, Store: e.admin.Keysets()},
		&lifecycle.ObjectsStep{Buckets: e.objects},
	}
	if sp.Kubeconfig != "" {
		e.kube = openKube(t, sp.Kubeconfig)
		e.steps = append(e.steps, &lifecycle.KubeStep{Group: e.kube.Namespace()}, &lifecycle.KubeStep{Group: e.kube.Resources()})
	}
	e.steps = append(e.steps, routes)
	if e.kube != nil {
		e.steps = append(e.steps, &lifecycle.KubeStep{Group: e.kube.Ingress()})
	}
	e.steps = append(e.steps, c.extra...)
	if sp.SMTPAddr != "" {
		require.NoError(t, invite.Install(ctx, e.admin))
		e.inviter, err = invite.New(invite.Config{Admin: e.admin, From: "RTMX <no-reply@rtmx.example>", LinkBase: sp.LinkBase,
			SMTP: invite.SMTPConfig{Addr: sp.SMTPAddr, StartTLS: invite.StartTLSNone}})
		require.NoError(t, err)
		e.steps = append(e.steps, &lifecycle.InvitationStep{Inviter: e.inviter})
	}
	e.steps = append(e.steps, &lifecycle.AuditStep{Admin: e.admin, Platform: e.platform, Actor: "test"})
	e.lc, err = lifecycle.New(ctx, lifecycle.Config{Admin: e.admin, Steps: e.steps, Backup: e.backup, Audit: e.platform, Actor: "test"})
	require.NoError(t, err)
	return e
}

func govClusterIf(gov bool) string {
	if gov {
		return govCluster
	}
	return ""
}

// newManager returns a keys.Manager over ks with the platform master key
// at kekPath, dedicated tenant keys made in the directory beside it, and
// the customer KMS clients customer.
func newManager(t testing.TB, kekPath string, ks keys.Store, customer ...registry.KMSClient) *keys.Manager {
	t.Helper()
	local, err := localkms.NewClient(localkms.Scheme)
	require.NoError(t, err)
	uri, err := localkms.KeyURI(kekPath)
	require.NoError(t, err)
	kc := keys.DefaultConfig()
	kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(uri)
	kc.CustomerKMS = customer
	kc.TenantKEKs, err = localkms.NewKeyMaker(local, tenantKEKDir(kekPath))
	require.NoError(t, err)
	m, err := keys.New(kc)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// request returns a parsed request for a new, unique tenant of tier.
func request(t testing.TB, name string, tier tenant.Tier) *lifecycle.Request {
	t.Helper()
	id := fmt.Sprintf("%s%d", name, tenantSeq.Add(1))
	req, err := parse(t, doc(t, "id", `"`+id+`"`, "tier", `"`+string(tier)+`"`, "encryption", `"platform-managed"`, "kms_key_arn", omit,
		"admin_email", `"admin-`+id+`@acme.defense"`))
	require.NoError(t, err)
	return req
}

// insertReq writes a requirement as the tenant of ctx.
func (e *env) insertReq(t testing.TB, ctx context.Context, reqID, text string) {
	t.Helper()
	_, err := e.db.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text, custom) VALUES ($1, $2, '{"risk": "high"}')`, reqID, text)
	require.NoError(t, err)
}

// requirements returns the tenant's requirement texts by ID.
func (e *env) requirements(t testing.TB, ctx context.Context) map[string]string {
	t.Helper()
	rows, err := e.db.Query(ctx, `SELECT req_id, requirement_text FROM requirements ORDER BY 1`)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		require.NoError(t, rows.Scan(&k, &v))
		out[k] = v
	}
	require.NoError(t, rows.Err())
	return out
}

// platformEntries counts the platform trail's entries of action about id.
func (e *env) platformEntries(t testing.TB, action string, id tenant.ID) int {
	t.Helper()
	var n int
	require.NoError(t, e.admin.ControlPlaneTx(t.Context(), func(tx pgx.Tx) error {
		return tx.QueryRow(t.Context(), `SELECT count(*) FROM tenancy.platform_audit WHERE action = $1 AND resource = $2`,
			action, "tenant/"+id.String()).Scan(&n)
	}))
	return n
}

// remains asks every step what is left of id.
func (e *env) remains(t testing.TB, id tenant.ID) []string {
	t.Helper()
	var out []string
	target := &lifecycle.Target{Info: tenant.Info{ID: id}}
	for _, s := range e.steps {
		left, err := s.Remains(t.Context(), target)
		require.NoError(t, err, s.Name())
		for _, l := range left {
			out = append(out, s.Name()+": "+l)
		}
	}
	return out
}

func removeFile(path string) error { return os.Remove(path) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// mailsTo returns the messages mailpit received for address.
func (e *env) mailsTo(t testing.TB, address string) []mailtest.Message {
	t.Helper()
	var out []mailtest.Message
	for _, s := range e.mail.Messages(t) {
		m := e.mail.Message(t, s.ID)
		for _, to := range m.To {
			if to.Address == address {
				out = append(out, m)
			}
		}
	}
	return out
}

// filepathGlob lists the files of the directory dir/elem...
func filepathGlob(dir string, elem ...string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(append([]string{dir}, elem...)...))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && !strings.HasSuffix(e.Name(), ".attrs") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// tenantKEKDir is where the dedicated tenant master keys of the env whose
// platform key is kekPath are made.
func tenantKEKDir(kekPath string) string { return filepath.Join(filepath.Dir(kekPath), "tenant-keks") }

// tenantSuffix is a number no other tenant of the test binary has.
func tenantSuffix() string { return fmt.Sprint(tenantSeq.Add(1)) }

// tenantManifest is the tenant-specific resource the tests deploy: a
// ConfigMap naming the tenant, and the Service its dedicated ingress
// routes to.
const tenantManifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: rtmx-config
data:
  tenant: "{{.ID}}"
  tier: "{{.Tier}}"
---
apiVersion: v1
kind: Service
metadata:
  name: rtmx-api
spec:
  selector:
    app: rtmx-api
  ports:
  - port: 8080
`

// openKube opens the Kubernetes steps' cluster from a kubeconfig: the
// default namespace objects with Istio's PeerAuthentication, the tenant
// manifest and the enterprise tier's dedicated ingress.
func openKube(t testing.TB, kubeconfig string) *kube.Cluster {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	// client-go's default client-side limit (5 requests a second, bursts
	// of 10) would throttle a namespace's dozen calls to a second.
	rc.QPS, rc.Burst = 100, 200
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	kc := kube.DefaultConfig(client, dyn)
	kc.PeerAuthentication = true
	kc.Manifests = []kube.Manifest{{Name: "rtmx.yaml", Template: tenantManifest}}
	kc.Ingress = &kube.IngressConfig{Name: "rtmx", Host: "{{.DNSLabel}}.dedicated.rtmx.example", ClassName: "nginx", Service: "rtmx-api", Port: 8080}
	c, err := kube.New(kc)
	require.NoError(t, err)
	return c
}
