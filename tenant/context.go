package tenant

import (
	"context"
	"fmt"
)

type ctxKey struct{}

// NewContext returns a copy of ctx that carries id as the current tenant.
// A zero id is not a tenant: the returned context then carries none, even if
// ctx did, so that a mistake cannot silently keep an earlier tenant.
func NewContext(ctx context.Context, id ID) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the tenant carried by ctx and whether there is one.
func FromContext(ctx context.Context) (ID, bool) {
	if ctx == nil {
		return ID{}, false
	}
	id, _ := ctx.Value(ctxKey{}).(ID)
	return id, !id.IsZero()
}

// Require returns the tenant carried by ctx, or an error wrapping
// [ErrNoTenant] that names op (the operation that needed it) when there is
// none. It is the accessor every tenant-scoped operation starts with.
func Require(ctx context.Context, op string) (ID, error) {
	id, ok := FromContext(ctx)
	if !ok {
		if op == "" {
			return ID{}, ErrNoTenant
		}
		return ID{}, fmt.Errorf("%s: %w (put one there with tenant.NewContext)", op, ErrNoTenant)
	}
	return id, nil
}

// RequireSame returns the tenant of ctx if it is want, and otherwise an error
// wrapping [ErrCrossTenant] (or [ErrNoTenant] when ctx has no tenant). Use it
// where input names a tenant (a URL path, a row's tenant_id) to check it
// against the context. The message does not name the other tenant.
func RequireSame(ctx context.Context, op string, want ID) (ID, error) {
	id, err := Require(ctx, op)
	if err != nil {
		return ID{}, err
	}
	if id != want {
		return ID{}, fmt.Errorf("%s: %w: the context's tenant is %s", op, ErrCrossTenant, id)
	}
	return id, nil
}
