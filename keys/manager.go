package keys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Defaults of [DefaultConfig].
const (
	// DefaultCacheMaxAge bounds how long an unwrapped keyset is served from
	// memory. It is also how long another replica may keep serving a tenant
	// after a shred or a master-key loss.
	DefaultCacheMaxAge = 5 * time.Minute
	// DefaultCacheMaxUses bounds the operations one unwrap serves.
	DefaultCacheMaxUses = 1 << 20
	// DefaultCacheMaxEntries bounds the number of cached keysets (three
	// purposes per tenant at most).
	DefaultCacheMaxEntries = 10_000
	// DefaultLoadTimeout bounds one Store read plus unwrap.
	DefaultLoadTimeout = 30 * time.Second
	// DefaultRefreshInterval is the shortest interval between two checks,
	// for one cached data keyset, of whether the Store holds a newer version.
	DefaultRefreshInterval = time.Second
)

// Config configures a [Manager]. Start from [DefaultConfig]; [New] rejects a
// zero or negative limit rather than guessing a default.
type Config struct {
	// Store persists the wrapped keysets. Required.
	Store Store

	// KMS are the clients of the platform's master keys: Config.PlatformKEK,
	// Config.RetiredKEKs and the keys Config.TenantKEKs makes. Any
	// registry.KMSClient (localkms, pkcs11kms, Tink's AWS, GCP and Vault
	// clients, fakekms in tests). A master-key URI is served by the first
	// one that supports it. Nothing is registered globally.
	KMS []registry.KMSClient

	// CustomerKMS are the clients of customer-managed master keys
	// (ProvisionOptions.CustomerKEK, BYOK) and of nothing else: Tink's AWS,
	// GCP or Vault clients with the access the customers granted. A
	// customer key is never served by Config.KMS, and a platform key never
	// by these, so that a URI from a provisioning request cannot reach the
	// platform's keys or files. Provision refuses local:// URIs and PKCS#11
	// URIs with a query (module-path, pin-source) as customer keys, whatever
	// clients are listed here.
	CustomerKMS []registry.KMSClient

	// TenantKEKs makes the master keys of tenants provisioned with
	// ProvisionOptions.TenantKEK, one per tenant (pkcs11kms.KeyMaker in the
	// platform's HSM token). Its keys must be served by Config.KMS. Nil: no
	// tenant gets a key of its own from the platform.
	TenantKEKs KeyMaker

	// PlatformKEK is the URI of the master key that wraps the keysets of
	// tenants provisioned without a key of their own. It may be empty if
	// every tenant has one.
	PlatformKEK URI

	// RetiredKEKs are the URIs of master keys the platform used before
	// PlatformKEK (the from of past Rewraps): kept to open old backups of
	// the keysets. Like the platform key, a customer may not name one as
	// its key (compared by identity, see [KeyIdentifier]).
	RetiredKEKs []URI

	// CacheMaxAge is how long an unwrapped keyset stays cached (> 0). A
	// timer per entry drops it at that age (used or not), so unwrapped keys
	// do not linger in memory and the hot path never reads the clock.
	CacheMaxAge time.Duration
	// CacheMaxUses is how many operations one unwrapped keyset serves
	// before it is read and unwrapped again (> 0).
	CacheMaxUses uint64
	// CacheMaxEntries bounds the cache (> 0). When it is full, a new entry
	// evicts one not used recently (the CLOCK approximation of
	// least-recently-used, at a constant cost per eviction).
	CacheMaxEntries int
	// LoadTimeout bounds one Store read and unwrap (> 0), and each
	// master-key call of Provision, Rotate and Rewrap. A load is shared by
	// all callers waiting for it and so does not stop when one of them gives
	// up; each caller still returns when its own context ends. A load that
	// times out (a hung KMS or HSM) fails for the callers waiting for it,
	// with an error naming the master key, and the next caller starts a new
	// one. The master key gets the deadline if its AEAD implements
	// tink.AEADWithContext (pkcs11kms's does); otherwise its call is
	// abandoned, left to finish in the background.
	LoadTimeout time.Duration
	// RefreshInterval is the shortest interval between two re-reads of a
	// data keyset prompted by a ciphertext under a key the cached keyset does
	// not have (a rotation by another replica) (> 0). A re-read costs one
	// Store query; the master key is called only if the version changed.
	RefreshInterval time.Duration

	// Logger receives rotation, re-wrap and shred events and master-key
	// failures; nil discards. Logs never carry key material.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the default cache limits and no Store,
// KMS client or platform KEK.
func DefaultConfig() Config {
	return Config{
		CacheMaxAge:     DefaultCacheMaxAge,
		CacheMaxUses:    DefaultCacheMaxUses,
		CacheMaxEntries: DefaultCacheMaxEntries,
		LoadTimeout:     DefaultLoadTimeout,
		RefreshInterval: DefaultRefreshInterval,
	}
}

// Manager holds the per-tenant keysets: it provisions, caches, rotates,
// re-wraps and shreds them, and seals and opens data for the tenant of a
// context. It is safe for concurrent use. It never prints key material.
type Manager struct {
	store           Store
	kms             []registry.KMSClient // platform and per-tenant keys
	customer        []registry.KMSClient // customer keys
	maker           KeyMaker             // nil without Config.TenantKEKs
	platform        kekRef               // zero if Config.PlatformKEK is empty
	retired         []kekRef             // Config.RetiredKEKs
	maxAge          time.Duration
	maxUses         uint64
	maxEntries      int
	loadTimeout     time.Duration
	refreshInterval time.Duration
	log             *slog.Logger

	// entries are the cached keysets, one map per purpose, by tenant ID
	// string (hashing a string key is cheaper than a struct key): read
	// without locks; written under mu.
	entries [3]sync.Map

	mu       sync.Mutex
	closed   bool   // Close was called
	count    int    // cached entries
	hand     *entry // the eviction hand in the ring of cached entries
	inflight map[cacheKey]*flight

	hits, misses, loads, loadErrors, kekCalls, evictions atomic.Uint64
}

// New returns a Manager for cfg, or an error wrapping [ErrInvalidArgument]
// (or [ErrUnsupportedKEK]) that names the field at fault.
func New(cfg Config) (*Manager, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("keys: New: %w: "+format, append([]any{ErrInvalidArgument}, args...)...)
	}
	switch {
	case cfg.Store == nil:
		return nil, bad("Config.Store is nil")
	case len(cfg.KMS) == 0 && len(cfg.CustomerKMS) == 0:
		return nil, bad("Config.KMS and Config.CustomerKMS are empty: give at least one KMS client")
	case len(cfg.KMS) == 0 && (cfg.PlatformKEK != "" || cfg.TenantKEKs != nil):
		return nil, bad("Config.KMS is empty: the platform's master keys (Config.PlatformKEK, Config.TenantKEKs) need a KMS client")
	case cfg.CacheMaxAge <= 0:
		return nil, bad("Config.CacheMaxAge must be > 0 (start from DefaultConfig)")
	case cfg.CacheMaxUses == 0:
		return nil, bad("Config.CacheMaxUses must be > 0 (start from DefaultConfig)")
	case cfg.CacheMaxEntries <= 0:
		return nil, bad("Config.CacheMaxEntries must be > 0 (start from DefaultConfig)")
	case cfg.LoadTimeout <= 0:
		return nil, bad("Config.LoadTimeout must be > 0 (start from DefaultConfig)")
	case cfg.RefreshInterval <= 0:
		return nil, bad("Config.RefreshInterval must be > 0 (start from DefaultConfig)")
	}
	for i, c := range cfg.KMS {
		if c == nil {
			return nil, bad("Config.KMS[%d] is nil", i)
		}
	}
	for i, c := range cfg.CustomerKMS {
		if c == nil {
			return nil, bad("Config.CustomerKMS[%d] is nil", i)
		}
	}
	m := &Manager{
		store:           cfg.Store,
		kms:             append([]registry.KMSClient(nil), cfg.KMS...),
		customer:        append([]registry.KMSClient(nil), cfg.CustomerKMS...),
		maker:           cfg.TenantKEKs,
		maxAge:          cfg.CacheMaxAge,
		maxUses:         cfg.CacheMaxUses,
		maxEntries:      cfg.CacheMaxEntries,
		loadTimeout:     cfg.LoadTimeout,
		refreshInterval: cfg.RefreshInterval,
		log:             cfg.Logger,
		inflight:        make(map[cacheKey]*flight),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if cfg.PlatformKEK != "" {
		ref, err := m.resolveArg("New", "Config.PlatformKEK", KEKPlatform, cfg.PlatformKEK)
		if err != nil {
			return nil, err
		}
		m.platform = ref
	}
	for i, uri := range cfg.RetiredKEKs {
		ref, err := m.resolveArg("New", fmt.Sprintf("Config.RetiredKEKs[%d]", i), KEKPlatform, uri)
		if err != nil {
			return nil, err
		}
		m.retired = append(m.retired, ref)
	}
	return m, nil
}

func checkTenant(op string, id tenant.ID) error {
	if id.IsZero() {
		return fmt.Errorf("keys: %s: %w: tenant ID is zero", op, ErrInvalidArgument)
	}
	return nil
}

func checkPurpose(op string, p Purpose) error {
	if !p.Valid() {
		return fmt.Errorf("keys: %s: %w: purpose %q is not one of data, blob, audit", op, ErrInvalidArgument, string(p))
	}
	return nil
}

// ProvisionOptions are the options of [Manager.Provision]. The zero value
// wraps the tenant's keysets with the platform master key. At most one
// field may be set.
type ProvisionOptions struct {
	// CustomerKEK is the URI of the customer's own master key
	// (customer-managed encryption, kms_key_arn in a provisioning request:
	// "aws-kms://arn:aws:kms:..."). It is served by Config.CustomerKMS only
	// and never destroyed by the platform: the customer revokes access to
	// the tenant's data by disabling the key or revoking the grant in their
	// KMS. Provision refuses a local:// URI, a PKCS#11 URI with a query, and
	// the platform master key or a retired one under any spelling. Several
	// tenants of one customer may share a key.
	CustomerKEK URI

	// TenantKEK asks for a master key of the tenant's own, made by the
	// platform through Config.TenantKEKs (labelled [TenantKEKLabel]) and
	// destroyed by [Manager.Shred].
	TenantKEK bool
}

// provisionKEK returns the master key that wraps a new tenant's keysets,
// making the tenant's own where asked.
func (m *Manager) provisionKEK(ctx context.Context, id tenant.ID, opts ProvisionOptions) (kekRef, error) {
	switch {
	case opts.CustomerKEK != "":
		const field = "ProvisionOptions.CustomerKEK"
		ref, err := m.resolveArg("Provision tenant "+id.String(), field, KEKCustomer, opts.CustomerKEK)
		if err != nil {
			return kekRef{}, err
		}
		// The same key may be served by a platform client too (a platform
		// on AWS KMS): compare it, as the platform spells it, as well.
		refs := []kekRef{ref}
		if pref, err := m.resolve(KEKPlatform, opts.CustomerKEK); err == nil {
			refs = append(refs, pref)
		}
		for _, r := range refs {
			if m.isPlatformOrRetired(r) {
				return kekRef{}, fmt.Errorf("keys: Provision tenant %s: %w: %w: %s %s is the platform master key or a retired one (Config.PlatformKEK, Config.RetiredKEKs); leave it empty to use the platform key",
					id, ErrInvalidArgument, ErrKEKInUse, field, URI(opts.CustomerKEK))
			}
		}
		return ref, nil
	case opts.TenantKEK:
		if m.maker == nil {
			return kekRef{}, fmt.Errorf("keys: Provision tenant %s: %w: ProvisionOptions.TenantKEK is set but Config.TenantKEKs is nil: configure a KeyMaker (pkcs11kms.KeyMaker)", id, ErrInvalidArgument)
		}
		ref, err := m.newTenantKEK(ctx, id)
		if err != nil {
			return kekRef{}, fmt.Errorf("keys: Provision tenant %s: %w", id, err)
		}
		return ref, nil
	}
	if m.platform.uri == "" {
		return kekRef{}, fmt.Errorf("keys: Provision tenant %s: %w: no master key: Config.PlatformKEK is empty and neither ProvisionOptions.CustomerKEK nor ProvisionOptions.TenantKEK is set", id, ErrInvalidArgument)
	}
	return m.platform, nil
}

// newTenantKEK has Config.TenantKEKs make a master key for tenant id and
// returns it resolved against Config.KMS. It refuses a key the maker does
// not own under the tenant's label, or that is the platform's or a retired
// one (a maker that hands out keys it should not).
func (m *Manager) newTenantKEK(ctx context.Context, id tenant.ID) (kekRef, error) {
	label := TenantKEKLabel(id)
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	var uri string
	err := protect(func() error {
		var err error
		uri, err = m.maker.CreateKey(ctx, label)
		return err
	})
	if err != nil {
		return kekRef{}, fmt.Errorf("create its master key: %w: %w", ErrUnwrap, err)
	}
	if !m.maker.Owns(uri, label) {
		return kekRef{}, fmt.Errorf("%w: Config.TenantKEKs made %s, which it does not own under the label %s", ErrInvalidArgument, URI(uri), label)
	}
	ref, err := m.resolve(KEKTenant, URI(uri))
	if err != nil {
		return kekRef{}, fmt.Errorf("Config.TenantKEKs: %w", err)
	}
	if ref.uri != URI(uri) {
		return kekRef{}, fmt.Errorf("%w: Config.TenantKEKs gives %s, which its KMS client spells %s: a KeyMaker must give canonical URIs", ErrInvalidArgument, URI(uri), ref.uri)
	}
	if m.isPlatformOrRetired(ref) {
		return kekRef{}, fmt.Errorf("%w: %w: Config.TenantKEKs gives %s, the platform master key or a retired one", ErrInvalidArgument, ErrKEKInUse, URI(uri))
	}
	return ref, nil
}

// Provision generates the tenant's three keysets (data, blob, audit), wraps
// each with its master key and writes all three in one Store transaction:
// all or none. The master key is the platform's, the customer's
// (opts.CustomerKEK) or one the platform makes for the tenant
// (opts.TenantKEK). Provision is idempotent: for a tenant that already has
// keysets wrapped by the requested master key (compared by identity, see
// [KeyIdentifier]) it does nothing and returns nil; if they are wrapped by
// another key it returns an error wrapping [ErrExists]. A shredded tenant
// cannot be provisioned again ([ErrKeyDestroyed]).
func (m *Manager) Provision(ctx context.Context, id tenant.ID, opts ProvisionOptions) error {
	if err := checkTenant("Provision", id); err != nil {
		return err
	}
	if opts.CustomerKEK != "" && opts.TenantKEK {
		return fmt.Errorf("keys: Provision tenant %s: %w: ProvisionOptions.CustomerKEK and ProvisionOptions.TenantKEK are both set: a tenant's keysets have one master key", id, ErrInvalidArgument)
	}
	if opts.CustomerKEK != "" {
		if err := checkCustomerURI("ProvisionOptions.CustomerKEK", opts.CustomerKEK); err != nil {
			return fmt.Errorf("keys: Provision tenant %s: %w", id, err)
		}
	}
	// A shredded tenant is never provisioned again, and one provisioned
	// already is not provisioned twice: say so before any master key is
	// made or called.
	switch w, err := m.store.Get(ctx, id, PurposeData); {
	case errors.Is(err, ErrKeyDestroyed):
		return fmt.Errorf("keys: Provision tenant %s: %w", id, err)
	case err == nil:
		return m.provisioned(id, w, opts)
	}
	ref, err := m.provisionKEK(ctx, id, opts)
	if err != nil {
		return err
	}
	sets := make([]WrappedKeyset, 0, 3)
	for _, p := range Purposes() {
		h, err := keyset.NewHandle(p.template())
		if err != nil {
			return fmt.Errorf("keys: Provision: generate %s keyset: %w", p, err)
		}
		wrapped, err := m.wrap(ctx, h, id, p, ref.kind, ref.uri)
		if err != nil {
			return fmt.Errorf("keys: Provision tenant %s: %w", id, err) // nothing written yet
		}
		sets = append(sets, WrappedKeyset{Tenant: id, Purpose: p, KEKURI: ref.uri, KEKKind: ref.kind, Wrapped: wrapped})
	}
	err = m.store.Put(ctx, sets...)
	if errors.Is(err, ErrConflict) { // provisioned meanwhile
		w, gerr := m.store.Get(ctx, id, PurposeData)
		if gerr != nil {
			return fmt.Errorf("keys: Provision tenant %s: %w", id, gerr)
		}
		return m.provisioned(id, w, opts)
	}
	if err != nil {
		return fmt.Errorf("keys: Provision tenant %s: %w", id, err)
	}
	m.log.InfoContext(ctx, "keys: provisioned tenant keysets", "tenant_id", id.String(), "kek", URI(ref.uri), "kek_kind", string(ref.kind))
	return nil
}

// provisioned answers a Provision of a tenant that has keysets (w, its
// data keyset) already: nil if they are wrapped as opts asks (the
// platform's key, a key of the tenant's own made by the platform, or the
// customer's key named by opts, compared by identity), and an error
// wrapping ErrExists otherwise.
func (m *Manager) provisioned(id tenant.ID, w WrappedKeyset, opts ProvisionOptions) error {
	want := KEKPlatform
	switch {
	case opts.CustomerKEK != "":
		want = KEKCustomer
	case opts.TenantKEK:
		want = KEKTenant
	}
	if w.KEKKind == want && (want != KEKCustomer || m.sameCustomerKEK(w.KEKURI, opts.CustomerKEK)) {
		return nil
	}
	return fmt.Errorf("keys: Provision tenant %s: %w, wrapped by %s", id, ErrExists, kekName(w.KEKKind, w.KEKURI))
}

// sameCustomerKEK reports whether the stored customer key URI stored and
// the one asked for name one key.
func (m *Manager) sameCustomerKEK(stored, asked URI) bool {
	if stored == asked {
		return true
	}
	a, err1 := m.resolve(KEKCustomer, stored)
	b, err2 := m.resolve(KEKCustomer, asked)
	return err1 == nil && err2 == nil && a.identity == b.identity
}

// Seal encrypts plaintext for the tenant of ctx with its data keyset,
// binding the tenant and b as associated data. Without a tenant in ctx it
// returns an error wrapping [tenant.ErrNoTenant].
//
// The result is Tink's AES-256-GCM ciphertext: a 5-byte key prefix, a
// random 12-byte nonce, the encrypted plaintext and a 16-byte tag (33 bytes
// more than the plaintext).
func (m *Manager) Seal(ctx context.Context, plaintext []byte, b Binding) ([]byte, error) {
	id, err := tenant.Require(ctx, "keys: Seal")
	if err != nil {
		return nil, err
	}
	if err := b.validate("Seal"); err != nil {
		return nil, err
	}
	e, err := m.get(ctx, id, PurposeData)
	if err != nil {
		return nil, err
	}
	buf := getADBuf()
	ad := dataAD(*buf, id, b)
	ct, err := e.aead.Encrypt(plaintext, ad)
	putADBuf(buf, ad)
	if err != nil {
		return nil, fmt.Errorf("keys: Seal: %w", err)
	}
	return ct, nil
}

// Open decrypts a ciphertext made by [Manager.Seal] for the tenant of ctx
// and the same Binding. Every ciphertext that does not open (another
// tenant's, another binding's, tampered with, truncated, extended) gives
// [ErrDecrypt], and nothing more specific. Errors about the keys themselves
// are distinct: [ErrKeyDestroyed] after a shred, [ErrNoKeys],
// [ErrUnwrap] naming the master key when it is unavailable, and
// [tenant.ErrNoTenant].
func (m *Manager) Open(ctx context.Context, ciphertext []byte, b Binding) ([]byte, error) {
	id, err := tenant.Require(ctx, "keys: Open")
	if err != nil {
		return nil, err
	}
	if err := b.validate("Open"); err != nil {
		return nil, err
	}
	e, err := m.get(ctx, id, PurposeData)
	if err != nil {
		return nil, err
	}
	buf := getADBuf()
	ad := dataAD(*buf, id, b)
	defer putADBuf(buf, ad)
	pt, err := e.aead.Decrypt(ciphertext, ad)
	if err == nil {
		return pt, nil
	}
	if e2 := m.refresh(ctx, e, ciphertext); e2 != nil {
		if pt, err := e2.aead.Decrypt(ciphertext, ad); err == nil {
			return pt, nil
		}
	}
	return nil, errOpen
}

// adPool recycles associated-data buffers: the AEAD does not keep the
// associated data after a call returns, and the hot path then allocates
// nothing of its own.
var adPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func getADBuf() *[]byte { return adPool.Get().(*[]byte) }

// putADBuf returns the buffer behind ad to the pool, unless it grew large.
func putADBuf(buf *[]byte, ad []byte) {
	if cap(ad) <= 4096 {
		*buf = ad[:0]
		adPool.Put(buf)
	}
}

// refresh handles a ciphertext whose Tink key prefix names a key the cached
// keyset e does not hold, as happens after another replica rotated the
// keyset. At most once per RefreshInterval per entry it reads the Store;
// only if the version changed does it drop e and load the new keyset (one
// master-key call). It returns the new entry, or nil.
func (m *Manager) refresh(ctx context.Context, e *entry, ct []byte) *entry {
	const tinkPrefix = 0x01
	if len(ct) < 5 || ct[0] != tinkPrefix || e.hasKey(binary.BigEndian.Uint32(ct[1:5])) {
		return nil
	}
	return m.refreshChanged(ctx, e)
}

// refreshChanged is refresh without the key-prefix check, for ciphertexts
// that carry none (blob streams): at most once per RefreshInterval per
// entry it reads the Store, and only if the keyset's version changed does
// it drop e and load the new one.
func (m *Manager) refreshChanged(ctx context.Context, e *entry) *entry {
	now := time.Now().UnixNano()
	last := e.lastCheck.Load()
	if now-last < int64(m.refreshInterval) || !e.lastCheck.CompareAndSwap(last, now) {
		return nil
	}
	w, err := m.store.Get(ctx, e.tenant, e.purpose)
	if err != nil {
		e.lastCheck.CompareAndSwap(now, last) // a failed read does not use up the interval
		return nil
	}
	if w.Version == e.version {
		return nil
	}
	m.invalidate(e)
	e2, err := m.get(ctx, e.tenant, e.purpose)
	if err != nil {
		return nil
	}
	return e2
}

// StreamingAEAD returns the blob streaming AEAD of the tenant of ctx. It is
// bound to that tenant: the associated data given to it is prefixed with the
// tenant. Get one per object rather than keeping it: the call is cheap
// (cached), and a kept one outlives a shred (a kept one does follow a
// rotation made by another replica).
func (m *Manager) StreamingAEAD(ctx context.Context) (*StreamingAEAD, error) {
	b, err := bind(m, ctx, "StreamingAEAD", PurposeBlob, func(e *entry) tink.StreamingAEAD { return e.stream },
		func(ctx context.Context, e *entry, _ []byte) *entry { return m.refreshChanged(ctx, e) })
	if err != nil {
		return nil, err
	}
	return &StreamingAEAD{b}, nil
}

// MAC returns the audit MAC of the tenant of ctx, bound to that tenant.
// Get one per batch of entries rather than keeping it, for the same
// reasons as [Manager.StreamingAEAD].
func (m *Manager) MAC(ctx context.Context) (*MAC, error) {
	b, err := bind(m, ctx, "MAC", PurposeAudit, func(e *entry) tink.MAC { return e.mac }, m.refresh)
	if err != nil {
		return nil, err
	}
	return &MAC{b}, nil
}

// bind returns the primitive (prim of the cached entry) of purpose p of
// the tenant of ctx, bound to that tenant, with the way to a newer keyset
// (load, at most once per RefreshInterval; see latest).
func bind[P any](m *Manager, ctx context.Context, op string, p Purpose, prim func(*entry) P, load func(context.Context, *entry, []byte) *entry) (*bound[P], error) {
	id, err := tenant.Require(ctx, "keys: "+op)
	if err != nil {
		return nil, err
	}
	e, err := m.get(ctx, id, p)
	if err != nil {
		return nil, err
	}
	latest := m.latest(ctx, e, load)
	return &bound[P]{tenant: id, p: prim(e), newer: func(hint []byte) (P, bool) {
		if e2 := latest(hint); e2 != nil {
			return prim(e2), true
		}
		var zero P
		return zero, false
	}}, nil
}

// latest returns a function that gives the newest entry of e's tenant and
// purpose known to this Manager, newer than e, or nil: from the cache, or
// else from the Store through load (at most once per RefreshInterval). A
// StreamingAEAD or MAC kept for a batch thus follows a rotation made on
// another replica for every item, not only the first. load runs with the
// values of ctx (the context that made the object) but not its
// cancellation, since a kept object may outlive that request, and within
// Config.LoadTimeout.
func (m *Manager) latest(ctx context.Context, e *entry, load func(context.Context, *entry, []byte) *entry) func([]byte) *entry {
	ctx = context.WithoutCancel(ctx)
	var cur atomic.Pointer[entry]
	cur.Store(e)
	fromStore := func(c *entry, ct []byte) *entry {
		ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
		defer cancel()
		return load(ctx, c, ct)
	}
	return func(ct []byte) *entry {
		c := cur.Load()
		if n := m.cached(cacheKey{e.tenant, e.purpose}); n != nil && n != c && n.version > c.version {
			c = n
		} else if n := fromStore(c, ct); n != nil {
			c = n
		}
		cur.Store(c)
		if c == e {
			return nil
		}
		return c
	}
}

// maxCASAttempts bounds the retries of a compare-and-swap write that loses
// a race.
const maxCASAttempts = 3

// Rotate adds a fresh key to the tenant's keyset of purpose p and makes it
// the primary: new seals (tags, streams) use it, and everything made with
// the older keys still opens. The keyset stays wrapped by the master key
// that wrapped it. This Manager's cache is purged; other replicas pick the
// new key up when their cache entry expires, or earlier when they meet its
// work: a data ciphertext or audit tag under a key they do not know, or a
// blob stream that none of their keys opens, makes them re-read the keyset
// (at most once per Config.RefreshInterval) and try again with it.
func (m *Manager) Rotate(ctx context.Context, id tenant.ID, p Purpose) error {
	if err := checkTenant("Rotate", id); err != nil {
		return err
	}
	if err := checkPurpose("Rotate", p); err != nil {
		return err
	}
	var err error
	for range maxCASAttempts {
		if err = m.rotateOnce(ctx, id, p); !errors.Is(err, ErrConflict) {
			break
		}
	}
	m.Purge(id)
	if err != nil {
		return fmt.Errorf("keys: Rotate %s keyset of tenant %s: %w", p, id, err)
	}
	m.log.InfoContext(ctx, "keys: rotated tenant keyset", "tenant_id", id.String(), "purpose", string(p))
	return nil
}

func (m *Manager) rotateOnce(ctx context.Context, id tenant.ID, p Purpose) error {
	w, err := m.store.Get(ctx, id, p)
	if err != nil {
		return err
	}
	h, err := m.unwrap(ctx, w)
	if err != nil {
		return err
	}
	km := keyset.NewManagerFromHandle(h)
	kid, err := km.Add(p.template())
	if err != nil {
		return err
	}
	if err := km.SetPrimary(kid); err != nil {
		return err
	}
	if h, err = km.Handle(); err != nil {
		return err
	}
	if w.Wrapped, err = m.wrap(ctx, h, id, p, w.KEKKind, w.KEKURI); err != nil {
		return err
	}
	return m.store.Put(ctx, w)
}

// RewrapResult reports a [Manager.Rewrap].
type RewrapResult struct {
	Rewrapped int // keysets now wrapped by the new master key
	Failed    int // keysets left on the old master key (see the error)
}

// rewrapBatch is the number of keysets listed per Store call by Rewrap.
const rewrapBatch = 100

// Rewrap re-wraps every keyset wrapped by the platform master key from
// with the platform master key to, one keyset at a time: the keysets
// themselves (and so all data, blobs and tags) are unchanged. Both keys
// are served by Config.KMS. Each keyset records its master key, so an
// interrupted Rewrap is resumed by running it again: keysets already on to
// are not listed. It continues past a keyset that fails and returns the
// failures joined. Run it with the old master key still available, then
// retire the old key once a run reports Failed == 0: list it in
// Config.RetiredKEKs for as long as backups made before need it, so that
// no customer can name it as theirs.
//
// Master keys are compared by identity (see [KeyIdentifier]): from may be
// spelled any way, and the keysets record the canonical URI of to. from and
// to may be one key reached two ways (a PKCS#11 URI with another
// pin-source): the keysets then record to.
//
// Only keysets wrapped by the platform's shared key move. A keyset of a
// tenant with a key of its own ([KEKTenant], [KEKCustomer]) is left on it
// and counted as failed, and to must not be such a key (it would be
// destroyed with its tenant, or revoked by a customer): Rewrap refuses it
// with an error wrapping [ErrInvalidArgument] and [ErrKEKInUse].
func (m *Manager) Rewrap(ctx context.Context, from, to URI) (RewrapResult, error) {
	var res RewrapResult
	fromRef, err := m.resolveArg("Rewrap", "from", KEKPlatform, from)
	if err != nil {
		return res, err
	}
	toRef, err := m.resolveArg("Rewrap", "to", KEKPlatform, to)
	if err != nil {
		return res, err
	}
	if fromRef.uri == toRef.uri {
		return res, fmt.Errorf("keys: Rewrap: %w: from and to are the same master key", ErrInvalidArgument)
	}
	if toRef.identity != fromRef.identity {
		if err := m.checkShared(ctx, toRef); err != nil {
			return res, fmt.Errorf("keys: Rewrap: to: %w", err)
		}
	}
	filters := []ListOptions{fromRef.filter()}
	if from != fromRef.uri {
		filters = append(filters, ListOptions{KEKURI: from}) // keysets stored before URIs were canonical
	}
	var errs []error
	for _, opts := range filters {
		opts.Limit = rewrapBatch
		for {
			if err := ctx.Err(); err != nil {
				return res, errors.Join(append(errs, fmt.Errorf("keys: Rewrap interrupted: %w", err))...)
			}
			batch, err := m.store.List(ctx, opts)
			if err != nil {
				return res, errors.Join(append(errs, fmt.Errorf("keys: Rewrap: list keysets: %w", err))...)
			}
			for _, w := range batch {
				if err := ctx.Err(); err != nil {
					return res, errors.Join(append(errs, fmt.Errorf("keys: Rewrap interrupted: %w", err))...)
				}
				opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
				if w.KEKURI == toRef.uri {
					continue // from and to are one key: already done
				}
				err := m.rewrapOne(ctx, w, toRef)
				if w.KEKKind != KEKPlatform {
					err = fmt.Errorf("%w: it is wrapped by the tenant's own master key (%s), which Rewrap does not move", ErrInvalidArgument, w.KEKKind)
				}
				if err != nil {
					res.Failed++
					errs = append(errs, fmt.Errorf("keys: Rewrap %s keyset of tenant %s: %w", w.Purpose, w.Tenant, err))
					m.log.WarnContext(ctx, "keys: re-wrap failed", "tenant_id", w.Tenant.String(), "purpose", string(w.Purpose), "error", err)
					continue
				}
				res.Rewrapped++
			}
			if len(batch) < opts.Limit {
				break
			}
		}
	}
	m.log.InfoContext(ctx, "keys: re-wrap done", "from", URI(fromRef.uri), "to", URI(toRef.uri), "rewrapped", res.Rewrapped, "failed", res.Failed)
	return res, errors.Join(errs...)
}

// checkShared fails, with an error wrapping ErrInvalidArgument and
// ErrKEKInUse, if the key r wraps a keyset of a tenant's own key
// ([KEKTenant], [KEKCustomer]) or is a per-tenant key Config.TenantKEKs
// would make.
func (m *Manager) checkShared(ctx context.Context, r kekRef) error {
	if m.maker != nil && strings.Contains(string(r.uri), tenantKEKLabelPrefix) {
		return fmt.Errorf("%w: %w: master key %s carries the label of a key Config.TenantKEKs makes for one tenant (%s...), which Shred of that tenant destroys", ErrInvalidArgument, ErrKEKInUse, URI(r.uri), tenantKEKLabelPrefix)
	}
	opts := r.filter()
	opts.Limit = rewrapBatch
	for {
		batch, err := m.store.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list keysets: %w", err)
		}
		for _, w := range batch {
			if w.KEKKind != KEKPlatform {
				return fmt.Errorf("%w: %w: master key %s wraps keysets of tenant %s as its own (%s) key", ErrInvalidArgument, ErrKEKInUse, URI(r.uri), w.Tenant, w.KEKKind)
			}
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
		}
		if len(batch) < opts.Limit {
			return nil
		}
	}
}

func (m *Manager) rewrapOne(ctx context.Context, w WrappedKeyset, to kekRef) error {
	from := w.KEKURI
	for range maxCASAttempts {
		if w.KEKKind != KEKPlatform {
			return nil // reported by Rewrap
		}
		h, err := m.unwrap(ctx, w)
		if err != nil {
			return err
		}
		nw := w
		nw.KEKURI = to.uri
		if nw.Wrapped, err = m.wrap(ctx, h, w.Tenant, w.Purpose, KEKPlatform, to.uri); err != nil {
			return err
		}
		err = m.store.Put(ctx, nw)
		if !errors.Is(err, ErrConflict) {
			return err
		}
		// Rotated (or re-wrapped by a concurrent run) since listed.
		if w, err = m.store.Get(ctx, w.Tenant, w.Purpose); err != nil {
			return err
		}
		if w.KEKURI != from {
			return nil // someone else moved it
		}
	}
	return ErrConflict
}

// ShredResult reports a [Manager.Shred].
type ShredResult struct {
	// Tombstone is the record the Store keeps of the deleted keysets.
	Tombstone Tombstone
	// DestroyedKEKs are the master keys the platform made for this tenant
	// alone (Config.TenantKEKs) that wrapped its keysets, destroyed by this
	// Shred or a previous one. Keys a Provision made and never used are
	// destroyed too, and not listed.
	DestroyedKEKs []URI
	// RetainedKEKs are per-tenant master keys recorded in the tombstone
	// that Config.TenantKEKs does not own (it was configured differently
	// when the tenant was provisioned): Shred destroys only the keys of the
	// tenant's label that the maker owns, so destroy these by hand if they
	// should go. The tenant's data is unreadable regardless.
	RetainedKEKs []URI
}

// Shred crypto-shreds the tenant: its wrapped keysets are deleted and a
// tombstone is recorded, in one Store transaction; this Manager's cache is
// purged; then every master key Config.TenantKEKs made for the tenant is
// destroyed. Afterwards every ciphertext of the tenant, including copies
// made before, fails with [ErrKeyDestroyed].
//
// Shred destroys no other key: not the platform's, and never a customer's
// ([KEKCustomer]): the customer revokes that in their own KMS. It asks the
// KeyMaker to destroy the keys of the tenant's label ([TenantKEKLabel]),
// never a key named by a caller or read from the Store.
//
// Other replicas stop serving the tenant when their cache entries expire,
// within Config.CacheMaxAge. Shred is idempotent: run it again to retry a
// key destruction that failed.
func (m *Manager) Shred(ctx context.Context, id tenant.ID) (ShredResult, error) {
	var res ShredResult
	if err := checkTenant("Shred", id); err != nil {
		return res, err
	}
	tomb, err := m.store.Delete(ctx, id)
	m.Purge(id)
	if err != nil {
		return res, fmt.Errorf("keys: Shred tenant %s: %w", id, err)
	}
	res.Tombstone = tomb
	if m.maker == nil {
		res.RetainedKEKs = tomb.TenantKEKs
		if len(tomb.TenantKEKs) > 0 {
			return res, fmt.Errorf("keys: Shred tenant %s: %w: the tenant's keysets were wrapped by a master key of its own, but Config.TenantKEKs is nil: configure the KeyMaker that made it and run Shred again", id, ErrInvalidArgument)
		}
		m.log.InfoContext(ctx, "keys: shredded tenant keys", "tenant_id", id.String())
		return res, nil
	}
	// The tenant's keys are destroyed even when the tombstone records none:
	// a Provision interrupted after it made a key wrote no keyset.
	label := TenantKEKLabel(id)
	dctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	err = protect(func() error { return m.maker.DestroyKeys(dctx, label) })
	cancel()
	for _, uri := range tomb.TenantKEKs {
		if err == nil && m.maker.Owns(string(uri), label) {
			res.DestroyedKEKs = append(res.DestroyedKEKs, uri)
		} else {
			res.RetainedKEKs = append(res.RetainedKEKs, uri)
		}
	}
	switch {
	case err != nil && len(tomb.TenantKEKs) > 0:
		return res, fmt.Errorf("keys: Shred tenant %s: destroy its master keys: %w (its keysets are deleted; run Shred again)", id, err)
	case err != nil:
		m.log.WarnContext(ctx, "keys: could not check for a per-tenant master key left by an interrupted Provision", "tenant_id", id.String(), "error", err)
	}
	if len(res.RetainedKEKs) > 0 && err == nil {
		m.log.WarnContext(ctx, "keys: per-tenant master keys not destroyed: Config.TenantKEKs does not own them", "tenant_id", id.String(), "keks", res.RetainedKEKs)
	}
	m.log.InfoContext(ctx, "keys: shredded tenant keys", "tenant_id", id.String(), "destroyed_keks", len(res.DestroyedKEKs))
	return res, nil
}
