package ws

import (
	"errors"

	"github.com/coder/websocket"

	"github.com/rtmx-ai/tenancy/authz"
)

// The errors of the package, matchable with errors.Is. Calls made with a
// context that carries no tenant fail with an error wrapping
// tenant.ErrNoTenant, and a Publish to another tenant's [Room] with one
// wrapping tenant.ErrCrossTenant.
var (
	// ErrInvalidRoom is wrapped by errors for a room name that breaks
	// the rules of [NewRoom]; the message names the rule, never the name.
	ErrInvalidRoom = errors.New("ws: invalid room name")

	// ErrClosed is wrapped by errors of a [Hub] that was closed.
	ErrClosed = errors.New("ws: hub closed")

	// ErrInvalidConfig is wrapped by the error of [NewHub] for a Config
	// that breaks its rules; the message names the field. It is
	// authz.ErrInvalidConfig.
	ErrInvalidConfig = authz.ErrInvalidConfig
)

// The close statuses the hub ends a connection with, besides
// websocket.StatusPolicyViolation (1008: the tenant is at its
// MaxClientsPerTenant, the client fell behind by more than SendQueue
// messages or WriteTimeout, or it sent faster than MessageRate),
// websocket.StatusUnsupportedData (1003: a binary
// frame), websocket.StatusMessageTooBig (1009: a frame over ReadLimit)
// and websocket.StatusGoingAway (1001: the hub was closed).
const (
	// StatusTokenExpired closes a connection when its token expires
	// (Principal.Expires): the client may connect again with a new
	// token.
	StatusTokenExpired websocket.StatusCode = 4001

	// StatusTenantNotActive closes every connection of a tenant that the
	// Directory no longer reports active (suspended, decommissioned, or
	// not known).
	StatusTenantNotActive websocket.StatusCode = 4003
)
