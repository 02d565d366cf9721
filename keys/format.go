package keys

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/core/registry"
)

// The exported types below hold master key URIs, which can carry secrets
// (the key of a Tink fake-kms:// URI, a PKCS#11 pin-value) or wrapped
// keysets. They print and log themselves through [DisplayURI], and
// implement fmt.Formatter so that no verb (%v, %+v, %#v, %s, %q, %x, %d,
// ...) reaches their raw fields.

// formatSafe writes s (gs for %#v; s quoted for %q) whatever the verb.
func formatSafe(f fmt.State, verb rune, s, gs string) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, gs)
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(s))
	default:
		_, _ = io.WriteString(f, s)
	}
}

// displayURIs returns DisplayURI of each of uris, joined for a message.
func displayURIs(uris []string) string {
	out := make([]string, len(uris))
	for i, u := range uris {
		out[i] = DisplayURI(u)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// String describes the keyset without its wrapped bytes, with the master
// key URI redacted by [DisplayURI].
func (w WrappedKeyset) String() string {
	return fmt.Sprintf("keys.WrappedKeyset{tenant=%s purpose=%s kek=%s kek_kind=%s version=%d wrapped=%d bytes}",
		w.Tenant, w.Purpose, DisplayURI(w.KEKURI), w.KEKKind, w.Version, len(w.Wrapped))
}

// GoString implements fmt.GoStringer like String.
func (w WrappedKeyset) GoString() string { return w.String() }

// Format implements fmt.Formatter: every verb prints String.
func (w WrappedKeyset) Format(f fmt.State, verb rune) { formatSafe(f, verb, w.String(), w.GoString()) }

// LogValue implements slog.LogValuer, without the wrapped bytes and with
// the master key URI redacted.
func (w WrappedKeyset) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("tenant_id", w.Tenant.String()),
		slog.String("purpose", string(w.Purpose)),
		slog.String("kek", DisplayURI(w.KEKURI)),
		slog.String("kek_kind", string(w.KEKKind)),
		slog.Int64("version", w.Version),
		slog.Int("wrapped_bytes", len(w.Wrapped)),
	)
}

// String describes the tombstone, with master key URIs redacted by
// [DisplayURI].
func (t Tombstone) String() string {
	return fmt.Sprintf("keys.Tombstone{tenant=%s destroyed_at=%s tenant_keks=%s}",
		t.Tenant, t.DestroyedAt.Format(time.RFC3339Nano), displayURIs(t.TenantKEKs))
}

// GoString implements fmt.GoStringer like String.
func (t Tombstone) GoString() string { return t.String() }

// Format implements fmt.Formatter: every verb prints String.
func (t Tombstone) Format(f fmt.State, verb rune) { formatSafe(f, verb, t.String(), t.GoString()) }

// LogValue implements slog.LogValuer, with master key URIs redacted.
func (t Tombstone) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("tenant_id", t.Tenant.String()),
		slog.Time("destroyed_at", t.DestroyedAt),
		slog.String("tenant_keks", displayURIs(t.TenantKEKs)),
	)
}

// String describes the result, with master key URIs redacted by
// [DisplayURI].
func (r ShredResult) String() string {
	return fmt.Sprintf("keys.ShredResult{tombstone=%s destroyed_kek=%s retained_keks=%s}",
		r.Tombstone, DisplayURI(r.DestroyedKEK), displayURIs(r.RetainedKEKs))
}

// GoString implements fmt.GoStringer like String.
func (r ShredResult) GoString() string { return r.String() }

// Format implements fmt.Formatter: every verb prints String.
func (r ShredResult) Format(f fmt.State, verb rune) { formatSafe(f, verb, r.String(), r.GoString()) }

// LogValue implements slog.LogValuer, with master key URIs redacted.
func (r ShredResult) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("tombstone", r.Tombstone),
		slog.String("destroyed_kek", DisplayURI(r.DestroyedKEK)),
		slog.String("retained_keks", displayURIs(r.RetainedKEKs)),
	)
}

// kmsTypes names the types of the KMS clients, not their contents (a
// client may hold a key URI, which may hold a key).
func kmsTypes(kms []registry.KMSClient) string {
	out := make([]string, len(kms))
	for i, k := range kms {
		out[i] = fmt.Sprintf("%T", k)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// String describes the configuration: the platform master key URI
// redacted by [DisplayURI], the types of the Store and KMS clients (not
// their contents), and the cache limits.
func (c Config) String() string {
	return fmt.Sprintf("keys.Config{store=%T kms=%s customer_kms=%s tenant_keks=%T platform_kek=%s cache_max_age=%v cache_max_uses=%d cache_max_entries=%d load_timeout=%v refresh_interval=%v}",
		c.Store, kmsTypes(c.KMS), kmsTypes(c.CustomerKMS), c.TenantKEKs, DisplayURI(c.PlatformKEK), c.CacheMaxAge, c.CacheMaxUses, c.CacheMaxEntries, c.LoadTimeout, c.RefreshInterval)
}

// GoString implements fmt.GoStringer like String.
func (c Config) GoString() string { return c.String() }

// Format implements fmt.Formatter: every verb prints String.
func (c Config) Format(f fmt.State, verb rune) { formatSafe(f, verb, c.String(), c.GoString()) }

// LogValue implements slog.LogValuer like String.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("store", fmt.Sprintf("%T", c.Store)),
		slog.String("kms", kmsTypes(c.KMS)),
		slog.String("customer_kms", kmsTypes(c.CustomerKMS)),
		slog.String("tenant_keks", fmt.Sprintf("%T", c.TenantKEKs)),
		slog.String("platform_kek", DisplayURI(c.PlatformKEK)),
		slog.Duration("cache_max_age", c.CacheMaxAge),
		slog.Uint64("cache_max_uses", c.CacheMaxUses),
		slog.Int("cache_max_entries", c.CacheMaxEntries),
		slog.Duration("load_timeout", c.LoadTimeout),
		slog.Duration("refresh_interval", c.RefreshInterval),
	)
}

// String describes the options, with master key URIs redacted by
// [DisplayURI].
func (o ListOptions) String() string {
	return fmt.Sprintf("keys.ListOptions{kek=%s kek_prefix=%s after=%s/%s limit=%d}",
		DisplayURI(o.KEKURI), DisplayURI(o.KEKURIPrefix), o.AfterTenant, o.AfterPurpose, o.Limit)
}

// GoString implements fmt.GoStringer like String.
func (o ListOptions) GoString() string { return o.String() }

// Format implements fmt.Formatter: every verb prints String.
func (o ListOptions) Format(f fmt.State, verb rune) { formatSafe(f, verb, o.String(), o.GoString()) }

// LogValue implements slog.LogValuer like String.
func (o ListOptions) LogValue() slog.Value { return slog.StringValue(o.String()) }

// String describes the options, with the master key URI redacted by
// [DisplayURI].
func (o ProvisionOptions) String() string {
	return fmt.Sprintf("keys.ProvisionOptions{customer_kek=%s tenant_kek=%t}", DisplayURI(o.CustomerKEK), o.TenantKEK)
}

// GoString implements fmt.GoStringer like String.
func (o ProvisionOptions) GoString() string { return o.String() }

// Format implements fmt.Formatter: every verb prints String.
func (o ProvisionOptions) Format(f fmt.State, verb rune) {
	formatSafe(f, verb, o.String(), o.GoString())
}

// LogValue implements slog.LogValuer like String.
func (o ProvisionOptions) LogValue() slog.Value { return slog.StringValue(o.String()) }
