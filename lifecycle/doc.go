// Package lifecycle takes tenants through their lifecycle: Request ->
// Provision -> Active -> (Suspended) -> Decommission -> Deleted.
//
// A provisioning request, the YAML document of REQ-DEPLOY-004, is read and
// validated by [ParseRequest]. A [Lifecycle] (see [New]) provisions the
// tenant it asks for with journaled, resumable steps, and deprovisions
// tenants: it suspends them, backs them up, deletes their data, shreds
// their keys, verifies that nothing remains and records the deletion.
//
// # Steps
//
// A [Step] is four methods: Name, Apply, Remove and Remains. The built-in
// ones follow REQ-DEPLOY-004's provisioning steps (the first, validation,
// is the Lifecycle's own):
//
//	step 2  PlacementStep   schema, database or dedicated cluster, by tier, with every tenant migration
//	step 3  KeysStep        the tenant's keysets, wrapped by the master key settings.encryption names
//	        ObjectsStep     the tenant's object prefix (checked empty; purged on removal)
//	step 4  KubeStep        namespace tenant-<dns label>: default-deny and allow NetworkPolicies,
//	                        ResourceQuota and LimitRange by tier, Istio STRICT PeerAuthentication (lifecycle/kube)
//	step 5  KubeStep        the tenant's manifests
//	step 6  RoutesStep      the tenant's hostnames in the control plane's route table,
//	        KubeStep        and the enterprise tier's dedicated ingress
//	step 7  InvitationStep  the admin's invitation e-mail with a single-use link (lifecycle/invite)
//	step 8  AuditStep       the provisioning's entry in the platform's audit trail
//
// Config.Steps lists the steps a platform uses, in order: leave out what it
// does not use, add its own. Every method must be idempotent, so that a
// step interrupted at any point can be run again.
//
// # The journal, resuming and compensation
//
// Each run (a provisioning or a deprovisioning) is journaled in the
// control plane (tenancy.lifecycle_runs and tenancy.lifecycle_steps): the
// request, and for each step when it started and whether it ended done or
// failed. One run per tenant is open at a time; a second Provision or
// Deprovision of the tenant is refused with [ErrRunInProgress].
// [Lifecycle.Resume] continues an open run after a crash: a step that was
// done is not run again, one that started is run again.
//
// When a step of a provisioning fails, the Lifecycle removes what the
// steps so far applied, in reverse order (the failed step included),
// checks with each that nothing remains, and leaves the tenant failed,
// with the reason in the journal; Provision returns a [*RunError]. If
// compensation itself fails (the API server still down, say), the run
// stays open and Resume finishes it. A context that ends stops a run as a
// crash would: it stays open.
//
// Tenant IDs are never reused: a request for an ID the directory has, in
// any state (failed and deleted included), is refused with
// [ErrTenantExists] before anything is journaled or made.
//
// # Deprovisioning, backup and restore
//
// [Lifecycle.Deprovision] runs these phases, each journaled and resumable:
// suspend (the tenant's logins stop and its sessions end), back up
// ([Backup]: the tenant's rows, read as a dedicated BYPASSRLS read-only
// role in one snapshot, its audit log among them, its objects and its
// settings, into one archive in a backup bucket, encrypted to a backup key
// that is not the tenant's, with a manifest of checksums), decommission,
// remove every step in reverse order with [KeyStep]s last (the data, then
// the keys: crypto-shredding), verify that no step's resources remain,
// and record the deletion in the platform's audit trail with the
// archive's digest. [Backup.Restore] checks an archive against its
// manifest and writes it into a fresh tenant, here or in another
// environment; [Lifecycle.Restore] does the same and records a
// tenant.restore entry in the platform's audit trail.
//
// # Configuration
//
// Per-tenant settings (RTM database configuration, custom fields with
// their JSON Schema, users and roles, Jira and GitHub integrations whose
// secrets are sealed with the tenant's key, notification preferences,
// branding) live in package lifecycle/settings, in the tenant's own
// placement, versioned and append-only; [SettingsPart] carries them
// through a backup.
//
// # Requests
//
//	tenant:
//	  id: "abc123"
//	  name: "Acme Defense Corp"
//	  tier: "enterprise"
//	  region: "us-gov-east-1"
//	  admin_email: "admin@acme.defense"
//	  settings:
//	    encryption: "customer-managed"
//	    kms_key_arn: "arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
//
// settings.encryption is one of platform-managed (the platform's shared
// master key), dedicated (a master key the platform makes for this tenant
// alone and destroys with it) and customer-managed (the customer's own AWS
// KMS key, settings.kms_key_arn, which only the customer can revoke).
// kms_key_arn is required with customer-managed and refused otherwise; it
// must be an AWS KMS key or alias ARN in the aws, aws-us-gov or aws-cn
// partition: any other scheme (local://, pkcs11:, gcp-kms://, ...) is
// refused, so a request can never point the platform at a key file or an
// HSM module. The key's region may differ from the tenant's (a
// multi-region or cross-region key), but not from its partition's.
//
// Whether the region is one the deployment serves, and whether the ID is
// taken already, are for the provisioning step: a request is checked on its
// own.
//
// # Errors
//
// ParseRequest reports every problem of a request at once in a
// [*RequestError] (errors.Is [ErrInvalidRequest]): one [FieldProblem] per
// problem, naming the field by its path in the document
// ("tenant.admin_email", "tenant.settings.kms_key_arn"; "" for the whole
// document), its line and the rule broken. An error reading the input is
// returned wrapped as it is, not as ErrInvalidRequest.
//
// # Security
//
// A request is untrusted input. ParseRequest refuses a document larger than
// [MaxRequestSize] before parsing it, refuses anchors and aliases outright
// (so an alias bomb is a short error, never an expansion), reads one
// document only, and refuses duplicate keys, unknown fields, explicit tags
// and values of the wrong type rather than guessing. Error messages do not
// repeat the values of fields; the unknown keys and parser messages they
// show are escaped to printable ASCII and truncated, so a hostile request
// cannot inject lines into a log. A panic of the YAML parser is recovered
// as a refused request. Parsing changes nothing outside the returned value.
package lifecycle
