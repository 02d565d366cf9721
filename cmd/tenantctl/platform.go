package main

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/jackc/pgx/v5"
	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	gcblob "gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob:// buckets
	_ "gocloud.dev/blob/fileblob"  // file:// buckets
	_ "gocloud.dev/blob/gcsblob"   // gs:// buckets
	_ "gocloud.dev/blob/memblob"   // mem:// buckets
	_ "gocloud.dev/blob/s3blob"    // s3:// buckets
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// platform is everything a command works on, opened from the Config.
type platform struct {
	cfg      *Config
	admin    *store.Admin
	db       *store.DB
	prov     *keys.Manager // keysets read-write, through the admin
	serving  *keys.Manager // keysets read-only, through the DB
	objects  *blob.Buckets
	backup   *lifecycle.Backup
	audit    *audit.Platform
	inviter  *invite.Inviter
	settings *settings.Settings // nil without the settings migration
	lc       *lifecycle.Lifecycle
	closers  []func()
}

func (p *platform) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// actor is who acts in audit records.
func (c *Config) actor() string {
	if c.Actor != "" {
		return c.Actor
	}
	return "tenantctl"
}

// tenantMigrations returns the tenant migrations of c.
func (c *Config) tenantMigrations() (fs.FS, error) {
	var base fs.FS
	if c.Migrations.Dir != "" {
		st, err := os.Stat(c.Migrations.Dir)
		if err != nil || !st.IsDir() {
			return nil, configErrorf("migrations.dir %s: not a directory", c.Migrations.Dir)
		}
		base = os.DirFS(c.Migrations.Dir)
	}
	v := c.Migrations.AuditVersion
	if v == 0 {
		v = 1
	}
	out, err := audit.WithMigration(base, v)
	if err != nil {
		return nil, configErrorf("migrations: %w", err)
	}
	if c.Migrations.SettingsVersion > 0 {
		if out, err = settings.WithMigration(out, c.Migrations.SettingsVersion); err != nil {
			return nil, configErrorf("migrations: %w", err)
		}
	}
	return out, nil
}

// kmsClients returns the platform's KMS clients: one for the scheme of
// the master key and of each of extra, and the maker of per-tenant keys.
func (c *Config) kmsClients(ctx context.Context, extra ...string) ([]registry.KMSClient, keys.KeyMaker, error) {
	var clients []registry.KMSClient
	var maker keys.KeyMaker
	seen := map[string]bool{}
	for i, uri := range append([]string{c.MasterKey}, extra...) {
		what := "master_key"
		if i > 0 {
			what = "key " + keys.URI(uri).String()
		}
		switch {
		case strings.HasPrefix(uri, localkms.Scheme):
			if seen["local"] {
				continue
			}
			seen["local"] = true
			local, err := localkms.NewClient(localkms.Scheme)
			if err != nil {
				return nil, nil, err
			}
			clients = append(clients, local)
			if c.TenantKeyDir != "" && i == 0 {
				dir, err := filepath.Abs(c.TenantKeyDir)
				if err != nil {
					return nil, nil, configErrorf("tenant_key_dir: %w", err)
				}
				if maker, err = localkms.NewKeyMaker(local, dir); err != nil {
					return nil, nil, configErrorf("tenant_key_dir: %w", err)
				}
			}
		case strings.HasPrefix(uri, "pkcs11:"):
			if seen["pkcs11"] {
				continue
			}
			seen["pkcs11"] = true
			client, err := pkcs11kms.NewClient("pkcs11:")
			if err != nil {
				return nil, nil, configErrorf("%s: %w", what, err)
			}
			clients = append(clients, client)
		case strings.HasPrefix(uri, "aws-kms://"):
			if seen["aws"] {
				continue
			}
			seen["aws"] = true
			client, err := awsClient(ctx, c.KMS, "aws-kms://")
			if err != nil {
				return nil, nil, configErrorf("kms: %w", err)
			}
			clients = append(clients, client)
		default:
			return nil, nil, configErrorf("%s: unsupported scheme (local://, pkcs11: or aws-kms://)", what)
		}
	}
	return clients, maker, nil
}

// awsClient returns Tink's AWS KMS client for keys under prefix, with the
// default credential chain and, if set, an endpoint override.
func awsClient(ctx context.Context, a AWSConfig, prefix string) (registry.KMSClient, error) {
	opts := []func(*awsconfig.LoadOptions) error{}
	if a.Region != "" {
		opts = append(opts, awsconfig.WithRegion(a.Region))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, err
	}
	api := kms.NewFromConfig(ac, func(o *kms.Options) {
		if a.Endpoint != "" {
			o.BaseEndpoint = aws.String(a.Endpoint)
		}
	})
	return awskms.NewClientWithOptions(ctx, prefix, awskms.WithKMS(api))
}

// newKeys returns a Manager over ks with the platform's master keys.
func (c *Config) newKeys(ctx context.Context, ks keys.Store, logger *slog.Logger, extra ...string) (*keys.Manager, error) {
	clients, maker, err := c.kmsClients(ctx, extra...)
	if err != nil {
		return nil, err
	}
	kc := keys.DefaultConfig()
	kc.Store, kc.KMS, kc.PlatformKEK, kc.TenantKEKs, kc.Logger = ks, clients, keys.URI(c.MasterKey), maker, logger
	if c.CustomerKMS.Region != "" {
		client, err := awsClient(ctx, c.CustomerKMS, "aws-kms://")
		if err != nil {
			return nil, configErrorf("customer_kms: %w", err)
		}
		kc.CustomerKMS = []registry.KMSClient{client}
	}
	m, err := keys.New(kc)
	if err != nil {
		return nil, configErrorf("keys: %w", err)
	}
	return m, nil
}

// adminConfig returns store's AdminConfig of c.
func (c *Config) adminConfig(secret store.LoginSecret, logger *slog.Logger) (*store.AdminConfig, *store.Config, error) {
	acfg, err := store.ParseAdminConfig(c.AdminURL)
	if err != nil {
		return nil, nil, configErrorf("admin_url: %w", err)
	}
	pcfg, err := store.ParseConfig(c.PlatformURL, secret)
	if err != nil {
		return nil, nil, configErrorf("platform_url: %w", err)
	}
	if c.PlatformPasswordFile != "" {
		pw, err := readSecretFile(c.PlatformPasswordFile)
		if err != nil {
			return nil, nil, configErrorf("platform_password_file: %w", err)
		}
		pcfg.Platform.ConnConfig.Password = pw
	} else if pw := os.Getenv(envPrefix + "PLATFORM_PASSWORD"); pw != "" {
		pcfg.Platform.ConnConfig.Password = pw
	}
	acfg.PlatformRole = c.PlatformRole
	if acfg.PlatformRole == "" {
		acfg.PlatformRole = pcfg.Platform.ConnConfig.User
	}
	acfg.RolePrefix = c.RolePrefix
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Logger = logger
	if acfg.Migrations, err = c.tenantMigrations(); err != nil {
		return nil, nil, err
	}
	for _, g := range c.GovernmentClusters {
		if err := acfg.AddCluster(g.Name, g.AdminURL); err != nil {
			return nil, nil, configErrorf("government_clusters %s: %w", g.Name, err)
		}
		if err := pcfg.AddCluster(g.Name, g.AdminURL); err != nil {
			return nil, nil, configErrorf("government_clusters %s: %w", g.Name, err)
		}
	}
	return acfg, pcfg, nil
}

// openPlatform opens the control plane, the keys, buckets, trail and the
// Lifecycle of c.
func openPlatform(ctx context.Context, c *Config, getenv func(string) string, logger *slog.Logger, extraKEKs ...string) (_ *platform, err error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	secret, err := c.loginSecret(getenv)
	if err != nil {
		return nil, err
	}
	acfg, pcfg, err := c.adminConfig(secret, logger)
	if err != nil {
		return nil, err
	}
	auditKey, err := tenant.ParseID(c.PlatformAuditKeyID)
	if err != nil {
		return nil, configErrorf("platform_audit_key_id: %w", err)
	}
	backupKey, err := tenant.ParseID(c.Backup.KeyID)
	if err != nil {
		return nil, configErrorf("backup.key_id: %w", err)
	}
	p := &platform{cfg: c}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.admin, err = store.OpenAdmin(ctx, acfg); err != nil {
		return nil, connectError("open the control plane (admin_url)", err)
	}
	p.closers = append(p.closers, p.admin.Close)
	for _, g := range c.GovernmentClusters {
		if err := p.admin.RegisterCluster(ctx, g.Name); err != nil {
			return nil, fmt.Errorf("register government cluster %s: %w", g.Name, err)
		}
	}
	if err := audit.Install(ctx, p.admin); err != nil {
		return nil, err
	}
	if p.db, err = store.Open(ctx, pcfg); err != nil {
		return nil, connectError("open the platform role's connection (platform_url)", err)
	}
	p.closers = append(p.closers, p.db.Close)
	if p.prov, err = c.newKeys(ctx, p.admin.Keysets(), logger, extraKEKs...); err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() { p.prov.Close() })
	if p.serving, err = c.newKeys(ctx, p.db.Keysets(), logger); err != nil {
		return nil, err
	}
	p.closers = append(p.closers, func() { p.serving.Close() })
	if p.audit, err = audit.NewPlatform(ctx, audit.PlatformConfig{Admin: p.admin, Keys: p.prov, KeyID: auditKey}); err != nil {
		return nil, configErrorf("platform audit trail (platform_audit_key_id %s): %w", auditKey, err)
	}
	if p.objects, err = blob.Open(ctx, c.ObjectsBucket, p.prov); err != nil {
		return nil, configErrorf("objects_bucket: %w", err)
	}
	p.closers = append(p.closers, func() { p.objects.Close() })
	bkt, err := gcblob.OpenBucket(ctx, c.Backup.Bucket)
	if err != nil {
		return nil, configErrorf("backup.bucket: %w", err)
	}
	p.closers = append(p.closers, func() { bkt.Close() })
	p.backup = &lifecycle.Backup{Admin: p.admin, Role: c.Backup.Role, Bucket: bkt, Keys: p.prov, KeyID: backupKey, Objects: p.objects}
	if c.Migrations.SettingsVersion > 0 {
		if p.settings, err = settings.New(p.db, p.serving); err != nil {
			return nil, err
		}
		// The settings travel in the backup, secrets included.
		p.backup.Parts = append(p.backup.Parts, &lifecycle.SettingsPart{Settings: p.settings})
	}
	kc, err := c.kubeCluster(logger)
	if err != nil {
		return nil, err
	}

	routes, err := lifecycle.NewRoutesStep(p.admin, c.Routes.Target, c.Routes.Hosts...)
	if err != nil {
		return nil, configErrorf("routes: %w", err)
	}
	routes.Reserved = c.Routes.Reserved
	gov := ""
	if len(c.GovernmentClusters) > 0 {
		gov = c.GovernmentClusters[0].Name
	}
	steps := []lifecycle.Step{
		&lifecycle.PlacementStep{Admin: p.admin, GovernmentCluster: gov},
		&lifecycle.KeysStep{Keys: p.prov, Store: p.admin.Keysets()},
		&lifecycle.ObjectsStep{Buckets: p.objects},
	}
	if kc != nil {
		steps = append(steps, &lifecycle.KubeStep{Group: kc.Namespace()}, &lifecycle.KubeStep{Group: kc.Resources()})
	}
	steps = append(steps, routes)
	if kc != nil && c.Kubernetes.Ingress != nil {
		steps = append(steps, &lifecycle.KubeStep{Group: kc.Ingress()})
	}
	if c.SMTP.Addr != "" {
		if err := invite.Install(ctx, p.admin); err != nil {
			return nil, err
		}
		ic := invite.Config{Admin: p.admin, From: c.SMTP.From, LinkBase: c.SMTP.LinkBase, Logger: logger,
			SMTP: invite.SMTPConfig{Addr: c.SMTP.Addr}}
		switch c.SMTP.StartTLS {
		case "", "required":
			ic.SMTP.StartTLS = invite.StartTLSRequired
		case "opportunistic":
			ic.SMTP.StartTLS = invite.StartTLSOpportunistic
		case "none":
			ic.SMTP.StartTLS = invite.StartTLSNone
		default:
			return nil, configErrorf("smtp.starttls: must be required, opportunistic or none")
		}
		if c.SMTP.Username != "" {
			pw, err := readSecretFile(c.SMTP.PasswordFile)
			if err != nil {
				return nil, configErrorf("smtp.password_file: %w", err)
			}
			host := c.SMTP.Addr
			if i := strings.LastIndexByte(host, ':'); i >= 0 {
				host = host[:i]
			}
			ic.SMTP.Auth = smtp.PlainAuth("", c.SMTP.Username, pw, host)
		}
		if p.inviter, err = invite.New(ic); err != nil {
			return nil, configErrorf("smtp: %w", err)
		}
		steps = append(steps, &lifecycle.InvitationStep{Inviter: p.inviter})
	}
	steps = append(steps, &lifecycle.AuditStep{Admin: p.admin, Platform: p.audit, Actor: c.actor()})
	p.lc, err = lifecycle.New(ctx, lifecycle.Config{Admin: p.admin, Steps: steps, Regions: c.Regions,
		Backup: p.backup, Audit: p.audit, Actor: c.actor(), Logger: logger})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// kubeCluster returns the Kubernetes steps' cluster, or nil without a
// kubeconfig.
func (c *Config) kubeCluster(logger *slog.Logger) (*kube.Cluster, error) {
	k := c.Kubernetes
	if k.Kubeconfig == "" {
		return nil, nil
	}
	var rc *rest.Config
	var err error
	if k.Kubeconfig == "in-cluster" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: k.Kubeconfig},
			&clientcmd.ConfigOverrides{CurrentContext: k.Context}).ClientConfig()
	}
	if err != nil {
		return nil, configErrorf("kubernetes.kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, configErrorf("kubernetes: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, configErrorf("kubernetes: %w", err)
	}
	kc := kube.DefaultConfig(client, dyn)
	kc.PeerAuthentication = k.PeerAuthentication
	kc.Logger = logger
	for _, ns := range k.AllowFromNamespaces {
		kc.AllowRules = append(kc.AllowRules, kube.AllowFromNamespace("allow-from-"+ns, ns))
	}
	for _, path := range k.Manifests {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, configErrorf("kubernetes.manifests: %w", err)
		}
		kc.Manifests = append(kc.Manifests, kube.Manifest{Name: filepath.Base(path), Template: string(b)})
	}
	if in := k.Ingress; in != nil {
		kc.Ingress = &kube.IngressConfig{Name: in.Name, Host: in.Host, ClassName: in.ClassName, Service: in.Service, Port: in.Port, TLSSecret: in.TLSSecret}
	}
	cluster, err := kube.New(kc)
	if err != nil {
		return nil, configErrorf("kubernetes: %w", err)
	}
	return cluster, nil
}

// connectError adds what tenantctl was doing to a connection error.
func connectError(what string, err error) error { return fmt.Errorf("%s: %w", what, err) }

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
