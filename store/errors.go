package store

import "errors"

var (
	// ErrUnsafeAppRole is returned by Open when the application role could
	// reach tenant data without assuming a tenant role.
	ErrUnsafeAppRole = errors.New("store: unsafe application role")

	// ErrUnknownTenant is wrapped by errors for a tenant that has no
	// placement in this database (never created, or dropped).
	ErrUnknownTenant = errors.New("store: unknown tenant")

	// ErrTenantExists is wrapped by errors for creating a tenant that exists.
	ErrTenantExists = errors.New("store: tenant already exists")

	// ErrInvalidTable is wrapped by errors for a table declaration that
	// breaks the rules of [Table].
	ErrInvalidTable = errors.New("store: invalid table declaration")

	// ErrInvalidConfig is wrapped by errors for a configuration that Open
	// cannot use.
	ErrInvalidConfig = errors.New("store: invalid configuration")
)
