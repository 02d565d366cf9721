package tenant_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/tenant"
)

func TestNewContextFromContext(t *testing.T) {
	a := tenant.MustParseID("alpha")
	ctx := tenant.NewContext(context.Background(), a)
	got, ok := tenant.FromContext(ctx)
	if !ok || got != a {
		t.Fatalf("FromContext = %q, %v; want %q, true", got, ok, a)
	}

	// Derived contexts keep the tenant.
	child, cancel := context.WithCancel(ctx)
	defer cancel()
	if got, ok := tenant.FromContext(child); !ok || got != a {
		t.Errorf("FromContext(child) = %q, %v; want %q, true", got, ok, a)
	}

	// An inner NewContext replaces the tenant for its subtree only.
	b := tenant.MustParseID("bravo")
	inner := tenant.NewContext(child, b)
	if got, _ := tenant.FromContext(inner); got != b {
		t.Errorf("inner tenant = %q, want %q", got, b)
	}
	if got, _ := tenant.FromContext(ctx); got != a {
		t.Errorf("outer tenant changed to %q", got)
	}
}

func TestFromContextEmpty(t *testing.T) {
	if id, ok := tenant.FromContext(context.Background()); ok || !id.IsZero() {
		t.Errorf("FromContext(Background) = %q, %v; want zero, false", id, ok)
	}
	// Another package's value under a look-alike key is not a tenant.
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, tenant.MustParseID("alpha"))
	if id, ok := tenant.FromContext(ctx); ok {
		t.Errorf("FromContext found %q under a foreign key", id)
	}
}

func TestFromContextNil(t *testing.T) {
	var ctx context.Context // nil
	if id, ok := tenant.FromContext(ctx); ok || !id.IsZero() {
		t.Errorf("FromContext(nil) = %q, %v; want zero, false", id, ok)
	}
	if _, err := tenant.Require(ctx, "op"); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("Require(nil) error = %v, want ErrNoTenant", err)
	}
}

func TestNewContextZeroIDClearsTenant(t *testing.T) {
	parent := tenant.NewContext(context.Background(), tenant.MustParseID("alpha"))
	ctx := tenant.NewContext(parent, tenant.ID{})
	if id, ok := tenant.FromContext(ctx); ok || !id.IsZero() {
		t.Errorf("after NewContext(zero): FromContext = %q, %v; want zero, false", id, ok)
	}
	if _, err := tenant.Require(ctx, "op"); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("after NewContext(zero): Require error = %v, want ErrNoTenant", err)
	}
	// The parent is untouched.
	if id, _ := tenant.FromContext(parent); id.String() != "alpha" {
		t.Errorf("parent tenant = %q", id)
	}
}

func TestRequire(t *testing.T) {
	a := tenant.MustParseID("alpha")
	id, err := tenant.Require(tenant.NewContext(context.Background(), a), "store: query")
	if err != nil || id != a {
		t.Fatalf("Require = %q, %v; want %q, nil", id, err, a)
	}

	id, err = tenant.Require(context.Background(), "store: query")
	if !errors.Is(err, tenant.ErrNoTenant) {
		t.Fatalf("Require(Background) error = %v, want ErrNoTenant", err)
	}
	if !id.IsZero() {
		t.Errorf("Require(Background) returned %q with its error", id)
	}
	if !strings.HasPrefix(err.Error(), "store: query: ") {
		t.Errorf("error %q does not name the op", err)
	}

	// Without an op the sentinel itself is returned.
	if _, err := tenant.Require(context.Background(), ""); err != tenant.ErrNoTenant {
		t.Errorf("Require with no op = %v, want ErrNoTenant itself", err)
	}
}

func TestRequireSame(t *testing.T) {
	a := tenant.MustParseID("alpha")
	b := tenant.MustParseID("bravo_other")
	ctx := tenant.NewContext(context.Background(), a)

	if id, err := tenant.RequireSame(ctx, "blob: get", a); err != nil || id != a {
		t.Errorf("RequireSame(same) = %q, %v; want %q, nil", id, err, a)
	}

	id, err := tenant.RequireSame(ctx, "blob: get", b)
	if !errors.Is(err, tenant.ErrCrossTenant) {
		t.Fatalf("RequireSame(other) error = %v, want ErrCrossTenant", err)
	}
	if errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("cross-tenant error %v also matches ErrNoTenant", err)
	}
	if !id.IsZero() {
		t.Errorf("RequireSame(other) returned %q with its error", id)
	}
	msg := err.Error()
	if strings.Contains(msg, b.String()) {
		t.Errorf("error %q names the other tenant %q", msg, b)
	}
	if !strings.HasPrefix(msg, "blob: get: ") {
		t.Errorf("error %q does not name the op", msg)
	}

	// The zero ID is never the same tenant.
	if _, err := tenant.RequireSame(ctx, "op", tenant.ID{}); !errors.Is(err, tenant.ErrCrossTenant) {
		t.Errorf("RequireSame(zero) error = %v, want ErrCrossTenant", err)
	}

	// Without a tenant in the context: ErrNoTenant, not ErrCrossTenant.
	_, err = tenant.RequireSame(context.Background(), "op", b)
	if !errors.Is(err, tenant.ErrNoTenant) || errors.Is(err, tenant.ErrCrossTenant) {
		t.Errorf("RequireSame without a tenant = %v, want ErrNoTenant only", err)
	}
}
