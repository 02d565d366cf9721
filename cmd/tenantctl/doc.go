// Command tenantctl is the operator CLI of tenancy: it provisions, suspends,
// reactivates, migrates, audits, backs up and deprovisions the tenants of an
// RTMX deployment (REQ-DEPLOY-004), over packages lifecycle, store, keys,
// blob and audit.
//
// # Commands
//
//	tenantctl init --dev [--admin-url URL] [--reset]   set up a local development deployment
//	tenantctl provision -f tenant.yaml [--dry-run]      provision a tenant (-f - reads stdin)
//	tenantctl resume ID                                 continue the tenant's open run
//	tenantctl suspend ID | reactivate ID                change an active tenant's state
//	tenantctl deprovision ID [--dry-run]                suspend, back up, delete, shred, verify, record
//	tenantctl restore --archive KEY --into ID           restore a backup into a fresh tenant (recorded in the platform trail)
//	tenantctl list                                      the directory (deleted tenants too)
//	tenantctl show ID                                   entry, routes, runs with their steps
//	tenantctl migrate [--parallelism N] [--canary N]    tenant migrations over the fleet
//	tenantctl keys rotate ID [--purpose data|blob|audit]
//	tenantctl keys rewrap --from URI --to URI
//	tenantctl audit verify [ID | --platform]
//	tenantctl audit export [ID | --platform] [-o FILE]
//	tenantctl config get ID SECTION [--version N]      a tenant's settings (lifecycle/settings)
//	tenantctl config set ID SECTION -f value.json [--expect-version N]
//
// Every command that prints data takes --output table (the default,
// aligned columns) or --output json. The JSON documents are stable: fields
// are added, never renamed or removed. A tenant is
// {"id","name","tier","region","state","created_at","updated_at"}; a run is
// {"id","tenant","op","state","reason","started_at","updated_at",
// "finished_at","steps":[{"step","phase","status","error","detail",
// "started_at","finished_at"}]}; show prints {"tenant","routes","runs"};
// list an array of tenants; a --dry-run plan {"tenant","op","dry_run",
// "steps":[{"step","does"}]}; suspend and reactivate {"tenant","state"};
// audit verify {"log","verified","entries","head_seq","checkpoints",
// "last_checkpoint"}; migrate {"total","migrated","failed":[{"tenant",
// "error"}],"pending","stopped"}. Data goes to standard output; errors,
// logs (log/slog, --log-level) and the progress bar of migrate (only when
// both standard output and standard error are terminals) to standard error.
//
// # Exit status
//
//	0  success
//	1  the operation failed: a step failed (the tenant is failed and
//	   compensated, or its run stays open and 'tenantctl resume ID'
//	   continues it), the database or a KMS failed, a run was interrupted
//	   (SIGINT or SIGTERM: the run stays open for resume)
//	2  usage: a bad command, flag, argument or tenant ID, or a provisioning
//	   request that does not parse (every problem printed with its path and line)
//	3  configuration: a missing, incomplete or wrong configuration
//	   (an unknown key of the file is named)
//	4  not found: an unknown tenant, no open run, no such archive or setting
//	5  conflict: the ID is or was a tenant's, a run is in progress (or being
//	   driven right now), a step refuses the request as it stands (a host
//	   routed to another tenant or reserved, objects under the prefix), a
//	   state change the lifecycle forbids, a stale settings version
//
// # Configuration
//
// Settings come from flags, then the environment, then a YAML file, the
// first that sets one winning. The file is --config, else TENANTCTL_CONFIG,
// else ./tenantctl.yaml, else $XDG_CONFIG_HOME/tenantctl/config.yaml; it is
// decoded strictly: an unknown key, a key given twice or a value of the
// wrong type is an error naming it (exit status 3). Every scalar key has
// an environment variable TENANTCTL_ + the key in upper case, nested keys
// joined by _ (backup.bucket: TENANTCTL_BACKUP_BUCKET; lists comma-separated),
// and most have a flag (--admin-url, --backup-bucket, ...: see
// tenantctl --help). Secrets never come from a flag: the login secret is
// read from login_secret_file (base64 of at least 32 random bytes, mode
// 0600) or TENANTCTL_LOGIN_SECRET, the platform role's password from
// platform_password_file, platform_url or TENANTCTL_PLATFORM_PASSWORD,
// the SMTP password from smtp.password_file. tenantctl prints none of them.
//
//	admin_url: postgres://admin@db:5432/rtmx        # store's admin role
//	platform_url: postgres://platform@db:5432/rtmx  # the platform's login role
//	platform_password_file: /run/secrets/platform-password
//	login_secret_file: /run/secrets/login-secret
//	role_prefix: rtmx_
//	platform_role: platform                         # default: platform_url's user
//	master_key: "pkcs11:token=tenancy;object=kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin"
//	                                                # or local:///path (dev), aws-kms://arn:aws:kms:...
//	kms: {region: us-gov-east-1, endpoint: ""}      # for an aws-kms:// master key (endpoint: local-kms)
//	customer_kms: {region: us-gov-east-1}           # enables customer-managed (BYOK) requests
//	tenant_key_dir: /var/lib/tenancy/tenant-keys    # local master keys of "dedicated" tenants (dev)
//	objects_bucket: s3://rtmx-objects?region=us-gov-east-1
//	backup: {bucket: "s3://rtmx-backups?region=us-gov-east-1", role: rtmx_backup, key_id: backupkey}
//	platform_audit_key_id: platformaudit
//	regions: [us-gov-east-1, us-gov-west-1]         # empty: any
//	routes: {hosts: ["{{.DNSLabel}}.rtmx.example"], target: svc/rtmx-api}
//	smtp: {addr: "smtp.example:587", from: "RTMX <no-reply@rtmx.example>", starttls: required,
//	       link_base: "https://rtmx.example/invite", username: "", password_file: ""}
//	government_clusters: [{name: gov, admin_url: "postgres://admin@gov-db:5432/rtmx"}]
//	migrations: {dir: ./migrations, audit_version: 1, settings_version: 2}
//	actor: ops@rtmx.example                         # who acts, in audit records
//
//	kubernetes:                                     # the Kubernetes steps (lifecycle/kube)
//	  kubeconfig: /etc/tenancy/kubeconfig           # or in-cluster; empty: no Kubernetes steps
//	  context: ""
//	  peer_authentication: true                     # Istio STRICT mTLS in the tenant namespace
//	  allow_from_namespaces: [ingress-nginx]
//	  manifests: [./deploy/rtmx.yaml]               # templated with .ID, .DNSLabel, .Namespace, .Tier, ...
//	  ingress: {name: rtmx, host: "{{.DNSLabel}}.dedicated.rtmx.example", class_name: nginx, service: rtmx-api, port: 8080}
//
// The provisioning steps are, in REQ-DEPLOY-004's order: validate,
// placement, keys, objects, then with kubernetes.kubeconfig set namespace
// (tenant-<dns label>, default-deny NetworkPolicy and allow rules,
// ResourceQuota and LimitRange by tier, PeerAuthentication) and resources
// (the manifests), routes, with kubernetes.ingress the enterprise tier's
// ingress, with smtp.addr the admin invitation, audit, activate. Steps
// are journaled by name: keep a deployment's sections once tenants were
// provisioned with them. The first government cluster receives new
// government tenants. With migrations.settings_version set, each tenant's
// settings (tenantctl config) travel in its backup archive, secrets included.
//
// # A first run
//
// On a machine with a local PostgreSQL superuser
// (postgres://postgres@127.0.0.1:5432/postgres, or --admin-url):
//
//	$ go run ./cmd/tenantctl init --dev
//	created database tenancy_dev
//	roles tdev_platform (login) and tdev_backup (NOLOGIN BYPASSRLS) ready
//	wrote tenantctl.yaml
//	keysets platformaudit (platform audit trail) and backupkey (backups) ready, wrapped by local:///home/me/rtmx/.tenantctl/master.key
//	...
//	$ go run ./cmd/tenantctl provision -f examples/tenant.yaml
//	run 1: provision of tenant abc123: succeeded
//	RUN  OP         STEP       PHASE  STATUS  ERROR
//	1    provision  validate   apply  done
//	1    provision  placement  apply  done
//	1    provision  keys       apply  done
//	1    provision  objects    apply  done
//	1    provision  routes     apply  done
//	1    provision  audit      apply  done
//	1    provision  activate   apply  done
//	$ go run ./cmd/tenantctl list
//	ID      NAME               TIER        REGION         STATE   CREATED
//	abc123  Acme Defense Corp  enterprise  us-gov-east-1  active  2026-12-01T19:02:50Z
//	$ go run ./cmd/tenantctl provision -f examples/tenant.yaml; echo $?
//	tenantctl: lifecycle: provision abc123: tenant already exists (state active): tenant IDs are never reused; choose another
//	5
//	$ go run ./cmd/tenantctl deprovision abc123
//	run 2: deprovision of tenant abc123: succeeded
//	backup archive: backups/abc123/run-2-20261201T190303.026697Z.tar.enc
//	RUN  OP           STEP          PHASE   STATUS  ERROR
//	2    deprovision  suspend       apply   done
//	2    deprovision  backup        apply   done
//	2    deprovision  decommission  apply   done
//	2    deprovision  audit         remove  done
//	2    deprovision  routes        remove  done
//	2    deprovision  objects       remove  done
//	2    deprovision  placement     remove  done
//	2    deprovision  keys          remove  done
//	2    deprovision  verify        apply   done
//	2    deprovision  record        apply   done
//	$ go run ./cmd/tenantctl show abc123 | head -5
//	ID:       abc123
//	Name:     Acme Defense Corp
//	Tier:     enterprise
//	Region:   us-gov-east-1
//	State:    deleted
//
// init --dev is idempotent; init --dev --reset drops what it made and
// starts over.
//
// # Security
//
// No connection string is printed: messages name a connection's user,
// host, port and database only, whichever form the string gives a
// password in. Master key URIs are printed through keys.URI (which
// redacts PINs), and no secret is accepted as a flag value: a connection
// string given as --admin-url or --platform-url that holds a password
// (or an sslpassword), in any form pgconn accepts, is refused (exit status
// 3); the password goes in PGPASSWORD or ~/.pgpass, the platform role's
// also in platform_password_file or TENANTCTL_PLATFORM_PASSWORD, or the
// URL in the configuration file or the environment. init --dev is for development only: it keeps the master key
// in a file and uses the PostgreSQL superuser as store's admin role.
package main
