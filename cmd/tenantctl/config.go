package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/rtmx-ai/tenancy/store"
)

// envPrefix is the prefix of every environment variable tenantctl reads.
const envPrefix = "TENANTCTL_"

// maxConfigSize bounds the configuration file.
const maxConfigSize = 1 << 20

// Config is tenantctl's configuration, as the YAML file spells it. Every
// scalar can also come from the environment (TENANTCTL_ and the key in
// upper case, nested keys joined by _) and most from a flag; a flag
// beats the environment, which beats the file.
type Config struct {
	// AdminURL is the connection string of store's admin role (CREATEROLE,
	// owner of the database): provisioning, DDL, the control plane.
	AdminURL string `yaml:"admin_url"`
	// PlatformURL is the connection string of the platform's login role
	// (control-plane reads; tenant-scoped work through tenant logins).
	PlatformURL string `yaml:"platform_url"`
	// PlatformPasswordFile, if set, holds the platform role's password
	// (instead of putting it into PlatformURL).
	PlatformPasswordFile string `yaml:"platform_password_file"`
	// LoginSecretFile holds the platform's login secret (base64 of 32 or
	// more random bytes), from which store derives every tenant login.
	// TENANTCTL_LOGIN_SECRET may hold the base64 itself instead.
	LoginSecretFile string `yaml:"login_secret_file"`
	// LoginSecretVersion numbers the login secret (1 if 0).
	LoginSecretVersion int `yaml:"login_secret_version"`
	// RolePrefix is store's AdminConfig.RolePrefix.
	RolePrefix string `yaml:"role_prefix"`
	// PlatformRole is the platform's login role; the user of PlatformURL
	// if empty.
	PlatformRole string `yaml:"platform_role"`
	// MasterKey is the URI of the platform's master key: local://PATH
	// (development), pkcs11:... (an HSM), aws-kms://arn:... (AWS KMS,
	// KMS.Endpoint overriding the endpoint, for local-kms).
	MasterKey string `yaml:"master_key"`
	// TenantKeyDir, with a local:// master key, is the directory of the
	// master keys made per tenant (settings.encryption: dedicated).
	TenantKeyDir string `yaml:"tenant_key_dir"`
	// KMS configures the AWS KMS client of an aws-kms:// master key.
	KMS AWSConfig `yaml:"kms"`
	// CustomerKMS, if its region is set, serves customer-managed keys
	// (settings.encryption: customer-managed).
	CustomerKMS AWSConfig `yaml:"customer_kms"`
	// ObjectsBucket is the URL of the platform's object bucket
	// (file://, s3://, gs://, azblob://).
	ObjectsBucket string `yaml:"objects_bucket"`
	// Backup is where deprovisioning backs tenants up.
	Backup BackupConfig `yaml:"backup"`
	// PlatformAuditKeyID names the keyset of the platform's audit trail.
	PlatformAuditKeyID string `yaml:"platform_audit_key_id"`
	// Regions are the regions the deployment serves; empty means any.
	Regions []string `yaml:"regions"`
	// Routes configures the DNS/routing step.
	Routes RoutesConfig `yaml:"routes"`
	// SMTP, if its addr is set, adds the admin invitation step.
	SMTP SMTPConfig `yaml:"smtp"`
	// GovernmentClusters are the dedicated clusters of government
	// tenants; the first one receives new government tenants.
	GovernmentClusters []ClusterConfig `yaml:"government_clusters"`
	// Migrations are the tenant migrations every tenant gets.
	Migrations MigrationsConfig `yaml:"migrations"`
	// Kubernetes, if its kubeconfig is set, adds the Kubernetes steps:
	// the tenant namespace with its policies and quotas, the tenant's
	// manifests and, if configured, the enterprise tier's ingress.
	Kubernetes KubeConfig `yaml:"kubernetes"`
	// Actor names who acts in the audit trail ("tenantctl" if empty).
	Actor string `yaml:"actor"`
}

// AWSConfig configures an AWS KMS client.
type AWSConfig struct {
	Region string `yaml:"region"`
	// Endpoint overrides the KMS endpoint (local-kms on loopback).
	Endpoint string `yaml:"endpoint"`
}

// BackupConfig configures deprovisioning's backup.
type BackupConfig struct {
	// Bucket is the backup bucket's URL.
	Bucket string `yaml:"bucket"`
	// Role is the backup role: NOLOGIN BYPASSRLS, nothing else.
	Role string `yaml:"role"`
	// KeyID names the backup key's keyset.
	KeyID string `yaml:"key_id"`
}

// RoutesConfig configures the routes step.
type RoutesConfig struct {
	// Hosts are text/template templates of the tenant's host names.
	Hosts []string `yaml:"hosts"`
	// Target is the service the routes lead to.
	Target string `yaml:"target"`
	// Reserved are host names that are never a tenant's (the platform's
	// own: api.example.com, www...): a request whose ID would make one
	// is refused.
	Reserved []string `yaml:"reserved"`
}

// SMTPConfig configures the invitation step.
type SMTPConfig struct {
	Addr string `yaml:"addr"`
	From string `yaml:"from"`
	// StartTLS is required (the default), opportunistic or none (loopback only).
	StartTLS string `yaml:"starttls"`
	// LinkBase is the URL the invitation links point at.
	LinkBase string `yaml:"link_base"`
	// Username and PasswordFile, if set, authenticate (PLAIN).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// ClusterConfig names a dedicated cluster.
type ClusterConfig struct {
	Name     string `yaml:"name"`
	AdminURL string `yaml:"admin_url"`
}

// MigrationsConfig names the tenant migrations.
type MigrationsConfig struct {
	// Dir holds the application's NNNN_name.sql files (none if empty).
	Dir string `yaml:"dir"`
	// AuditVersion numbers the audit log's migration (1 if 0).
	AuditVersion int `yaml:"audit_version"`
	// SettingsVersion numbers the settings table's migration; 0 leaves
	// per-tenant settings (tenantctl config) out.
	SettingsVersion int `yaml:"settings_version"`
}

// KubeConfig configures the Kubernetes steps (lifecycle/kube).
type KubeConfig struct {
	// Kubeconfig is the path of a kubeconfig file, or "in-cluster" for
	// the service account of the pod tenantctl runs in. Empty: no
	// Kubernetes steps.
	Kubeconfig string `yaml:"kubeconfig"`
	// Context is the kubeconfig's context; its current one if empty.
	Context string `yaml:"context"`
	// PeerAuthentication adds Istio's STRICT mTLS PeerAuthentication.
	PeerAuthentication bool `yaml:"peer_authentication"`
	// AllowFromNamespaces are namespaces (an ingress controller's) whose
	// pods may reach the tenant's, beside the default allow rules.
	AllowFromNamespaces []string `yaml:"allow_from_namespaces"`
	// Manifests are files of tenant-specific resources: YAML templated
	// with the tenant (.ID, .DNSLabel, .Namespace, .Tier, ...).
	Manifests []string `yaml:"manifests"`
	// Ingress, if set, is the enterprise tier's dedicated ingress.
	Ingress *KubeIngress `yaml:"ingress"`
}

// KubeIngress is the dedicated ingress of enterprise tenants.
type KubeIngress struct {
	Name      string `yaml:"name"`
	Host      string `yaml:"host"`
	ClassName string `yaml:"class_name"`
	Service   string `yaml:"service"`
	Port      int32  `yaml:"port"`
	TLSSecret string `yaml:"tls_secret"`
}

// configError is an error of the configuration: exit status 3.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Errorf(format, args...)}
}

// setting is one scalar of Config that the environment and a flag can set.
type setting struct {
	key   string // the YAML path, "backup.bucket"
	flag  string // "" for none
	usage string
	str   func(c *Config) *string
	num   func(c *Config) *int
	list  func(c *Config) *[]string // comma-separated in env and flags
	// conn marks a connection string: as a flag, it must hold no password.
	conn bool
	// passwordFrom says where conn's password goes instead of the flag.
	passwordFrom string
}

func (s setting) env() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_"))
}

// configSettings are the scalars of Config that the environment and flags set.
// Secrets have no flag: the login secret comes from a file or the
// environment only.
var configSettings = []setting{
	{key: "admin_url", flag: "admin-url", usage: "connection string of the admin role, without a password", str: func(c *Config) *string { return &c.AdminURL },
		conn: true, passwordFrom: adminPasswordFrom},
	{key: "platform_url", flag: "platform-url", usage: "connection string of the platform role, without a password", str: func(c *Config) *string { return &c.PlatformURL },
		conn: true, passwordFrom: "platform_password_file (--platform-password-file), " + envPrefix + "PLATFORM_PASSWORD, PGPASSWORD or ~/.pgpass, or platform_url in the configuration file or " + envPrefix + "PLATFORM_URL"},
	{key: "platform_password_file", flag: "platform-password-file", usage: "file holding the platform role's password", str: func(c *Config) *string { return &c.PlatformPasswordFile }},
	{key: "login_secret_file", flag: "login-secret-file", usage: "file holding the login secret (base64)", str: func(c *Config) *string { return &c.LoginSecretFile }},
	{key: "login_secret_version", usage: "version of the login secret", num: func(c *Config) *int { return &c.LoginSecretVersion }},
	{key: "role_prefix", flag: "role-prefix", usage: "prefix of the roles store creates", str: func(c *Config) *string { return &c.RolePrefix }},
	{key: "platform_role", flag: "platform-role", usage: "the platform's login role", str: func(c *Config) *string { return &c.PlatformRole }},
	{key: "master_key", flag: "master-key", usage: "URI of the platform master key (local://, pkcs11:, aws-kms://)", str: func(c *Config) *string { return &c.MasterKey }},
	{key: "tenant_key_dir", flag: "tenant-key-dir", usage: "directory of per-tenant local master keys", str: func(c *Config) *string { return &c.TenantKeyDir }},
	{key: "kms.region", flag: "kms-region", usage: "AWS region of an aws-kms:// master key", str: func(c *Config) *string { return &c.KMS.Region }},
	{key: "kms.endpoint", flag: "kms-endpoint", usage: "AWS KMS endpoint override", str: func(c *Config) *string { return &c.KMS.Endpoint }},
	{key: "customer_kms.region", flag: "customer-kms-region", usage: "AWS region of customer-managed keys", str: func(c *Config) *string { return &c.CustomerKMS.Region }},
	{key: "customer_kms.endpoint", flag: "customer-kms-endpoint", usage: "AWS KMS endpoint override for customer keys", str: func(c *Config) *string { return &c.CustomerKMS.Endpoint }},
	{key: "objects_bucket", flag: "objects-bucket", usage: "URL of the objects bucket", str: func(c *Config) *string { return &c.ObjectsBucket }},
	{key: "backup.bucket", flag: "backup-bucket", usage: "URL of the backup bucket", str: func(c *Config) *string { return &c.Backup.Bucket }},
	{key: "backup.role", flag: "backup-role", usage: "the backup role (NOLOGIN BYPASSRLS)", str: func(c *Config) *string { return &c.Backup.Role }},
	{key: "backup.key_id", flag: "backup-key-id", usage: "keyset ID of the backup key", str: func(c *Config) *string { return &c.Backup.KeyID }},
	{key: "platform_audit_key_id", flag: "platform-audit-key-id", usage: "keyset ID of the platform audit key", str: func(c *Config) *string { return &c.PlatformAuditKeyID }},
	{key: "regions", flag: "regions", usage: "regions served, comma-separated", list: func(c *Config) *[]string { return &c.Regions }},
	{key: "routes.hosts", flag: "route-hosts", usage: "host templates, comma-separated", list: func(c *Config) *[]string { return &c.Routes.Hosts }},
	{key: "routes.target", flag: "route-target", usage: "where routes lead", str: func(c *Config) *string { return &c.Routes.Target }},
	{key: "routes.reserved", flag: "route-reserved", usage: "host names that are never a tenant's, comma-separated", list: func(c *Config) *[]string { return &c.Routes.Reserved }},
	{key: "smtp.addr", flag: "smtp-addr", usage: "SMTP server host:port (enables invitations)", str: func(c *Config) *string { return &c.SMTP.Addr }},
	{key: "smtp.from", flag: "smtp-from", usage: "From of invitations", str: func(c *Config) *string { return &c.SMTP.From }},
	{key: "smtp.starttls", flag: "smtp-starttls", usage: "required, opportunistic or none", str: func(c *Config) *string { return &c.SMTP.StartTLS }},
	{key: "smtp.link_base", flag: "smtp-link-base", usage: "URL the invitation links point at", str: func(c *Config) *string { return &c.SMTP.LinkBase }},
	{key: "smtp.username", flag: "smtp-username", usage: "SMTP user name", str: func(c *Config) *string { return &c.SMTP.Username }},
	{key: "smtp.password_file", flag: "smtp-password-file", usage: "file holding the SMTP password", str: func(c *Config) *string { return &c.SMTP.PasswordFile }},
	{key: "migrations.dir", flag: "migrations-dir", usage: "directory of tenant migrations", str: func(c *Config) *string { return &c.Migrations.Dir }},
	{key: "migrations.audit_version", usage: "version of the audit log migration", num: func(c *Config) *int { return &c.Migrations.AuditVersion }},
	{key: "migrations.settings_version", usage: "version of the settings migration (0: none)", num: func(c *Config) *int { return &c.Migrations.SettingsVersion }},
	{key: "kubernetes.kubeconfig", flag: "kubeconfig", usage: "kubeconfig of the tenants' cluster, or in-cluster (enables the Kubernetes steps)", str: func(c *Config) *string { return &c.Kubernetes.Kubeconfig }},
	{key: "kubernetes.context", flag: "kube-context", usage: "kubeconfig context", str: func(c *Config) *string { return &c.Kubernetes.Context }},
	{key: "actor", flag: "actor", usage: "who acts, in audit records", str: func(c *Config) *string { return &c.Actor }},
}

// adminPasswordFrom says where the admin role's password goes.
const adminPasswordFrom = "PGPASSWORD or ~/.pgpass, or admin_url in the configuration file or " + envPrefix + "ADMIN_URL"

// secretConnKeys are the connection string keys that hold a secret.
var secretConnKeys = map[string]bool{"password": true, "sslpassword": true}

// notAllowedConnKey finds the key pgconn names when a connection string has
// one that ParseConfigOptions.ConnStringAllowedKeys leaves out.
var notAllowedConnKey = regexp.MustCompile(`connection string key "([^"]*)" is not in ConnStringAllowedKeys`)

// checkConnFlag refuses a connection string given as flag --name that holds
// a password (in the URL's user info, ?password= or password=) or an
// sslpassword: ps shows a command line to every user and shell history
// keeps it. pgconn's own parser finds the keys, so every form it accepts
// is covered; the error repeats nothing of the string.
func checkConnFlag(name, s, passwordFrom string) error {
	allowed := []string{}
	for range 256 {
		_, err := pgconn.ParseConfigWithOptions(s, pgconn.ParseConfigOptions{ConnStringAllowedKeys: allowed})
		if err == nil {
			return nil
		}
		m := notAllowedConnKey.FindAllStringSubmatch(err.Error(), -1)
		if m == nil {
			return configErrorf("flag --%s: %w", name, err)
		}
		key := m[len(m)-1][1]
		if secretConnKeys[key] {
			return configErrorf("flag --%s: a connection string given as a flag must not hold a password (%s): ps shows it to every user and shell history keeps it; give the password in %s", name, key, passwordFrom)
		}
		allowed = append(allowed, key)
	}
	return configErrorf("flag --%s: too many connection string keys", name)
}

// flagValues holds the values of the configuration flags until they are
// applied over the file and the environment.
type flagValues map[string]*string

func addConfigFlags(flagSet *pflag.FlagSet) flagValues {
	v := flagValues{}
	for _, s := range configSettings {
		if s.flag == "" {
			continue
		}
		v[s.flag] = flagSet.String(s.flag, "", s.usage+" (env "+s.env()+")")
	}
	return v
}

// configPaths are the default configuration files, in the order tried.
func configPaths(getenv func(string) string) []string {
	paths := []string{"tenantctl.yaml"}
	xdg := getenv("XDG_CONFIG_HOME")
	if xdg == "" {
		if home := getenv("HOME"); home != "" {
			xdg = filepath.Join(home, ".config")
		}
	}
	if xdg != "" {
		paths = append(paths, filepath.Join(xdg, "tenantctl", "config.yaml"))
	}
	return paths
}

// loadConfig reads the file (explicit, or the first default that exists),
// then the environment, then the flags that were given.
func loadConfig(explicit string, getenv func(string) string, flagSet *pflag.FlagSet, flags flagValues) (*Config, string, error) {
	c := &Config{}
	path := explicit
	if path == "" {
		path = getenv(envPrefix + "CONFIG")
	}
	if path != "" {
		if err := readConfigFile(path, c); err != nil {
			return nil, path, err
		}
	} else {
		for _, p := range configPaths(getenv) {
			err := readConfigFile(p, c)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, p, err
			}
			path = p
			break
		}
	}
	for _, s := range configSettings {
		if v := getenv(s.env()); v != "" {
			if err := s.set(c, v); err != nil {
				return nil, path, configErrorf("environment %s: %w", s.env(), err)
			}
		}
	}
	for _, s := range configSettings {
		if s.flag == "" || !flagSet.Changed(s.flag) {
			continue
		}
		if s.conn {
			if err := checkConnFlag(s.flag, *flags[s.flag], s.passwordFrom); err != nil {
				return nil, path, err
			}
		}
		if err := s.set(c, *flags[s.flag]); err != nil {
			return nil, path, configErrorf("flag --%s: %w", s.flag, err)
		}
	}
	return c, path, nil
}

func (s setting) set(c *Config, v string) error {
	switch {
	case s.str != nil:
		*s.str(c) = v
	case s.num != nil:
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%s: not a non-negative integer", s.key)
		}
		*s.num(c) = n
	case s.list != nil:
		var out []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		*s.list(c) = out
	}
	return nil
}

// readConfigFile decodes path into c strictly: an unknown key, a key
// given twice or a value of the wrong type is an error naming it.
func readConfigFile(path string, c *Config) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &configError{fmt.Errorf("config file %s: %w", path, err)}
		}
		return configErrorf("config file %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return configErrorf("config file %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return configErrorf("config file %s: larger than %d bytes", path, maxConfigSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return configErrorf("config file %s: %s", path, yamlMessage(err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return configErrorf("config file %s: more than one YAML document", path)
	}
	return nil
}

// yamlMessage rewrites yaml.v3's messages about unknown fields ("field x
// not found in type main.Config") to name the key.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		if i := strings.Index(m, ": field "); i >= 0 && strings.Contains(m, " not found in type ") {
			key := m[i+len(": field "):]
			key = key[:strings.Index(key, " not found in type ")]
			m = m[:i] + ": unknown key " + strconv.Quote(key)
		}
		msgs[i] = m
	}
	return strings.Join(msgs, "; ")
}

// loginSecret reads the login secret from the environment or its file.
func (c *Config) loginSecret(getenv func(string) string) (store.LoginSecret, error) {
	version := c.LoginSecretVersion
	if version == 0 {
		version = 1
	}
	raw := getenv(envPrefix + "LOGIN_SECRET")
	source := "environment " + envPrefix + "LOGIN_SECRET"
	if raw == "" {
		if c.LoginSecretFile == "" {
			return store.LoginSecret{}, configErrorf("no login secret: set login_secret_file (or %sLOGIN_SECRET)", envPrefix)
		}
		b, err := readSecretFile(c.LoginSecretFile)
		if err != nil {
			return store.LoginSecret{}, configErrorf("login secret: %w", err)
		}
		raw, source = b, "login secret file "+c.LoginSecretFile
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil {
		return store.LoginSecret{}, configErrorf("%s: not base64", source)
	}
	if len(key) < 32 {
		return store.LoginSecret{}, configErrorf("%s: shorter than 32 bytes", source)
	}
	return store.LoginSecret{Version: version, Key: key}, nil
}

// readSecretFile reads a small secret file, refusing one that group or
// others may read.
func readSecretFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s: readable by group or others (chmod 600 %s)", path, path)
	}
	if st.Size() > 4096 {
		return "", fmt.Errorf("%s: larger than 4096 bytes", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// check reports what the configuration lacks for opening the platform.
func (c *Config) check() error {
	var missing []string
	for _, f := range []struct{ key, v string }{
		{"admin_url", c.AdminURL}, {"platform_url", c.PlatformURL}, {"master_key", c.MasterKey},
		{"objects_bucket", c.ObjectsBucket}, {"backup.bucket", c.Backup.Bucket}, {"backup.role", c.Backup.Role},
		{"backup.key_id", c.Backup.KeyID}, {"platform_audit_key_id", c.PlatformAuditKeyID},
		{"routes.target", c.Routes.Target},
	} {
		if f.v == "" {
			missing = append(missing, f.key)
		}
	}
	if len(c.Routes.Hosts) == 0 {
		missing = append(missing, "routes.hosts")
	}
	if len(missing) > 0 {
		return configErrorf("configuration incomplete: missing %s (run `tenantctl init --dev` for a local setup)", strings.Join(missing, ", "))
	}
	for i, g := range c.GovernmentClusters {
		if g.Name == "" || g.AdminURL == "" {
			return configErrorf("government_clusters[%d]: name and admin_url are required", i)
		}
	}
	if c.SMTP.Addr != "" && (c.SMTP.From == "" || c.SMTP.LinkBase == "") {
		return configErrorf("smtp: from and link_base are required with addr")
	}
	return nil
}
