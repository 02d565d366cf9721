package ws

import (
	"context"
	"fmt"

	"github.com/rtmx-ai/tenancy/tenant"
)

// MaxRoomLen is the longest room name, in bytes.
const MaxRoomLen = 64

// Room is one room of one tenant: a tenant and a local name. The only
// way to make one is [NewRoom], which takes the tenant from a context,
// so no code names a room by a global string: two tenants using the same
// name have two rooms, and nothing a client sends (a name with '/', ':'
// or a tenant's name in it) reaches another tenant's. Rooms are
// comparable values.
type Room struct {
	tenant tenant.ID
	name   string
}

// NewRoom returns the room called name of the tenant of ctx. It fails
// with an error wrapping tenant.ErrNoTenant when ctx carries no tenant,
// and with one wrapping [ErrInvalidRoom] naming the rule when name breaks
// one: 1 to [MaxRoomLen] bytes of ASCII letters, digits, '-', '_' and
// '.', the first a letter or digit. Names are case-sensitive and never
// cleaned: "Req" and "req" are two rooms.
func NewRoom(ctx context.Context, name string) (Room, error) {
	id, err := tenant.Require(ctx, "ws.NewRoom")
	if err != nil {
		return Room{}, err
	}
	if err := validateRoom(name); err != nil {
		return Room{}, err
	}
	return Room{tenant: id, name: name}, nil
}

// Tenant returns the room's tenant (the zero ID for the zero Room).
func (r Room) Tenant() tenant.ID { return r.tenant }

// Name returns the room's name within its tenant.
func (r Room) Name() string { return r.name }

// String returns "<tenant>/<name>", for logs.
func (r Room) String() string { return r.tenant.String() + "/" + r.name }

// validateRoom checks name against the rules of NewRoom.
func validateRoom(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidRoom)
	case len(name) > MaxRoomLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidRoom, MaxRoomLen)
	case !alnum(name[0]):
		return fmt.Errorf("%w: the first byte is not an ASCII letter or digit", ErrInvalidRoom)
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("%w: byte %d is not an ASCII letter, digit, '-', '_' or '.'", ErrInvalidRoom, i)
		}
	}
	return nil
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
