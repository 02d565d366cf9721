package store

import "errors"

var (
	// ErrUnsafeAppRole is returned by Open when the platform role could
	// reach tenant data (a superuser, BYPASSRLS, a member of a tenant
	// login, privileges on a tenant schema, ...), and by OpenAdmin when the
	// platform role is the admin role.
	ErrUnsafeAppRole = errors.New("unsafe platform role")

	// ErrUnknownTenant is wrapped by errors for a tenant that has no
	// placement in this database (never created, or dropped).
	ErrUnknownTenant = errors.New("unknown tenant")

	// ErrTenantExists is wrapped by errors for creating a tenant that exists.
	ErrTenantExists = errors.New("tenant already exists")

	// ErrInvalidTable is wrapped by errors for a table declaration that
	// breaks the rules of [Table].
	ErrInvalidTable = errors.New("invalid table declaration")

	// ErrSimpleProtocol is wrapped by errors for a statement sent with
	// pgx.QueryExecModeSimpleProtocol: it inlines arguments into the SQL
	// text and lets one string carry several statements, so store never
	// sends it.
	ErrSimpleProtocol = errors.New("the simple query protocol is refused")

	// ErrInvalidConfig is wrapped by errors for a configuration that Open
	// cannot use.
	ErrInvalidConfig = errors.New("invalid configuration")
)
