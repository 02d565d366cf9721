// Package lifecycle takes tenants through their lifecycle: Request ->
// Provision -> Active -> (Suspended) -> Decommission -> Deleted.
//
// What exists now is the first stage, the provisioning request: the YAML
// document of REQ-DEPLOY-004, read and validated by [ParseRequest] into a
// [Request] whose fields are typed (tenant.ID, tenant.Tier, [Encryption])
// and checked. [Settings.KeyOptions] turns its encryption settings into the
// keys.ProvisionOptions of the tenant's keysets. The provisioning steps
// (placement, keys, namespace, routing, invitation, audit entry; journaled
// and resumable), deprovisioning and per-tenant configuration are to come.
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
