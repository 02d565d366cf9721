package ws_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/tenant"
)

// hostileRooms are room names a client of one tenant might send to reach
// another's room, or to confuse a reader; each is refused.
var hostileRooms = map[string]string{
	"":                         "empty",
	"b/x":                      "byte 1",
	"bravo/x":                  "byte 5",
	"../b":                     "first byte",
	"..":                       "first byte",
	"./x":                      "first byte",
	"x/../../bravo/x":          "byte 1",
	"tenant_bravo:x":           "byte 12",
	"bravo:x":                  "byte 5",
	"tenants/bravo/x":          "byte 7",
	"x\\..\\bravo":             "byte 1",
	"x y":                      "byte 1",
	" x":                       "first byte",
	"x\x00bravo":               "byte 1",
	"x\n":                      "byte 1",
	"-x":                       "first byte",
	"_x":                       "first byte",
	".hidden":                  "first byte",
	"%2e%2e":                   "first byte",
	"x%2Fbravo":                "byte 1",
	"brаvo":                    "byte 2",     // Cyrillic а
	"ｂravo":                    "first byte", // full-width b
	"bravo\u200b":              "byte 5",     // zero-width space
	"bravo\u0301":              "byte 5",     // combining accent
	"caf\xe9":                  "byte 3",     // invalid UTF-8
	"x*":                       "byte 1",
	"x#y":                      "byte 1",
	strings.Repeat("a", 65):    "longer than 64 bytes",
	strings.Repeat("a", 1<<16): "longer than 64 bytes",
}

func TestNewRoomRefusesHostileNames(t *testing.T) {
	ctx := tenant.NewContext(t.Context(), tenant.MustParseID("alpha"))
	for name, rule := range hostileRooms {
		_, err := ws.NewRoom(ctx, name)
		require.ErrorIs(t, err, ws.ErrInvalidRoom, "%q", name)
		require.Contains(t, err.Error(), rule, "%q", name)
		require.True(t, strings.HasPrefix(err.Error(), "ws: invalid room name: "), err.Error())
		require.Equal(t, 1, strings.Count(err.Error(), "ws:"), err.Error())
		if len(name) > 2 {
			require.NotContains(t, err.Error(), name, "the error does not echo the name")
		}
	}
}

func TestNewRoomAcceptsNames(t *testing.T) {
	id := tenant.MustParseID("alpha")
	ctx := tenant.NewContext(t.Context(), id)
	for _, name := range []string{"x", "X", "0", "req-DEPLOY-004", "a.b_c-d", "a..b", strings.Repeat("z", ws.MaxRoomLen)} {
		r, err := ws.NewRoom(ctx, name)
		require.NoError(t, err, "%q", name)
		require.Equal(t, id, r.Tenant())
		require.Equal(t, name, r.Name())
		require.Equal(t, "alpha/"+name, r.String())
	}
}

func TestNewRoomNeedsTenant(t *testing.T) {
	_, err := ws.NewRoom(t.Context(), "x")
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	// A context whose tenant was cleared carries none either.
	ctx := tenant.NewContext(tenant.NewContext(t.Context(), tenant.MustParseID("alpha")), tenant.ID{})
	_, err = ws.NewRoom(ctx, "x")
	require.ErrorIs(t, err, tenant.ErrNoTenant)
}

func TestSameNameInTwoTenantsIsTwoRooms(t *testing.T) {
	a, err := ws.NewRoom(tenant.NewContext(t.Context(), tenant.MustParseID("alpha")), "x")
	require.NoError(t, err)
	b, err := ws.NewRoom(tenant.NewContext(t.Context(), tenant.MustParseID("bravo")), "x")
	require.NoError(t, err)
	require.NotEqual(t, a, b)
	require.Equal(t, a.Name(), b.Name())
	require.True(t, (ws.Room{}).Tenant().IsZero())
}
