package keys

import (
	"context"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Store persists wrapped keysets and tombstones. Package store implements it
// on PostgreSQL (store.Keysets, in the control-plane schema); [MemStore]
// keeps them in memory for examples and tests of code that uses keys.
//
// A Store only ever sees keysets wrapped by a master key: it holds no key
// material in the clear. Implementations must be safe for concurrent use and
// must honour the error contract of each method, which [Manager] relies on.
type Store interface {
	// Get returns the tenant's keyset for purpose p. It returns an error
	// wrapping ErrKeyDestroyed if the tenant has a tombstone (whether or not
	// rows remain), and one wrapping ErrNoKeys if it has neither a tombstone
	// nor a keyset for p.
	Get(ctx context.Context, id tenant.ID, p Purpose) (WrappedKeyset, error)

	// Put writes all of sets in one transaction: all or none. A set with
	// Version 0 is created (version 1); a set with Version v > 0 replaces the
	// stored one only if the stored version is still v (compare-and-swap),
	// and becomes version v+1. Put fails with an error wrapping ErrConflict
	// if a set to create exists or a set to replace is missing or at another
	// version, and with one wrapping ErrKeyDestroyed if the tenant has a
	// tombstone. Put and Delete of the same tenant are serialised, so no
	// keyset is ever written beside a tombstone. Put sets CreatedAt and
	// UpdatedAt itself.
	Put(ctx context.Context, sets ...WrappedKeyset) error

	// Delete removes every keyset of the tenant and records a tombstone, in
	// one transaction, and returns the tombstone. The tombstone lists the
	// distinct KEK URIs of the deleted keysets whose KEKKind is [KEKTenant]. Delete
	// is idempotent: for a tenant that already has a tombstone it returns
	// that tombstone; for a tenant that has no keysets it records a
	// tombstone with no KEKs, so a tenant ID is never provisioned again.
	Delete(ctx context.Context, id tenant.ID) (Tombstone, error)

	// List returns up to opts.Limit keysets in (tenant, purpose) order,
	// starting after (opts.AfterTenant, opts.AfterPurpose), restricted to
	// those whose KEKURI is opts.KEKURI when it is not empty and starts with
	// opts.KEKURIPrefix when that is not empty.
	List(ctx context.Context, opts ListOptions) ([]WrappedKeyset, error)
}

// KEKKind says whose master key wraps a keyset, and so which KMS clients
// serve it and whether [Manager.Shred] destroys it.
type KEKKind string

const (
	// KEKPlatform is the platform master key (Config.PlatformKEK, or one
	// it was re-wrapped from), shared by tenants and served by Config.KMS.
	// Shred never destroys it.
	KEKPlatform KEKKind = "platform"
	// KEKTenant is a master key the platform made for this tenant alone
	// (ProvisionOptions.TenantKEK, through Config.TenantKEKs), served by
	// Config.KMS. Shred destroys it.
	KEKTenant KEKKind = "tenant"
	// KEKCustomer is the customer's own master key (BYOK,
	// ProvisionOptions.CustomerKEK), served by Config.CustomerKMS only. The
	// platform never destroys it: the customer revokes it in their KMS.
	KEKCustomer KEKKind = "customer"
)

// Valid reports whether k is one of the kinds above.
func (k KEKKind) Valid() bool {
	return k == KEKPlatform || k == KEKTenant || k == KEKCustomer
}

// WrappedKeyset is one tenant keyset as stored: a Tink keyset encrypted by
// the master key named KEKURI, with keysetAD(Tenant, Purpose) as associated
// data. It holds no key material in the clear.
type WrappedKeyset struct {
	Tenant  tenant.ID
	Purpose Purpose
	// KEKURI names the master key that wraps this keyset. Each keyset
	// records its own, so a master-key re-wrap can be interrupted and
	// resumed.
	KEKURI URI
	// KEKKind says whose key KEKURI is: the platform's, one the platform
	// made for this tenant alone, or the customer's.
	KEKKind KEKKind
	// Wrapped is the encrypted keyset (Tink's EncryptedKeyset, binary).
	Wrapped []byte
	// Version counts the writes of this keyset, from 1; 0 means "not stored".
	Version int64
	// CreatedAt and UpdatedAt are set by the Store.
	CreatedAt, UpdatedAt time.Time
}

// Tombstone records that a tenant's keys were destroyed.
type Tombstone struct {
	Tenant      tenant.ID
	DestroyedAt time.Time
	// TenantKEKs are the master keys the platform made for this tenant
	// alone ([KEKTenant]) that wrapped its keysets when they were deleted.
	// [Manager.Shred] destroys the tenant's key and reports these.
	TenantKEKs []URI
}

// ListOptions selects keysets for [Store.List].
type ListOptions struct {
	// KEKURI, when not empty, restricts the list to keysets whose KEKURI
	// is exactly this.
	KEKURI URI
	// KEKURIPrefix, when not empty, restricts the list to keysets whose
	// KEKURI starts with it (compared byte by byte). [Manager] uses it to
	// find the keysets of a master key by its identity ([KeyIdentifier]).
	KEKURIPrefix URI
	// AfterTenant and AfterPurpose make a cursor: the list starts after
	// this (tenant, purpose) pair. A zero AfterTenant starts at the
	// beginning.
	AfterTenant  tenant.ID
	AfterPurpose Purpose
	// Limit is the largest number of keysets returned; it must be > 0.
	Limit int
}
