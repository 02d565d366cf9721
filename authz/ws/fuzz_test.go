package ws_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/tenant"
)

// FuzzDecode feeds the client message decoder arbitrary frames. It never
// panics; what it accepts is one JSON object with op, room and (for a
// publish only) data members and no other, whose room NewRoom accepts;
// anything else is refused with one of the protocol's error codes.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"join","room":"x"}`,
		`{"op":"leave","room":"x"}`,
		`{"op":"publish","room":"x","data":{"a":[1,2,3]}}`,
		`{"op":"join","room":"x","tenant":"bravo"}`,
		`{"op":"join","room":"bravo/x"}`,
		`{"op":"join","room":"../bravo"}`,
		`{"op":"join","room":"tenant_bravo:x"}`,
		`{"op":"join","room":"brаvo"}`,
		`{"OP":"JOIN","ROOM":"x"}`,
		`{"op":"join","room":"x","room":"../b"}`,
		`{"op":"join","room":"x"} {"op":"join","room":"y"}`,
		`{"op":"publish","room":"x","data":null}`,
		`{"op":"publish","room":"x","data":1e999}`,
		`{"op":"join","room":"\u0000"}`,
		`null`, `[]`, ``, `{`, "\xff",
	} {
		f.Add([]byte(s))
	}
	ctx := tenant.NewContext(f.Context(), tenant.MustParseID("alpha"))
	f.Fuzz(func(t *testing.T, b []byte) {
		op, room, data, code := ws.Decode(b)
		if code != "" {
			require.Contains(t, []string{"bad_message", "unknown_op", "invalid_room"}, code)
			require.Empty(t, op)
			return
		}
		require.Contains(t, []string{"join", "leave", "publish"}, op)
		_, err := ws.NewRoom(ctx, room)
		require.NoError(t, err, "accepted room %q", room)
		require.Equal(t, op == "publish", data != nil)
		if data != nil {
			require.True(t, json.Valid(data))
		}
		var members map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &members), "accepted %q", b)
		for k := range members {
			require.Contains(t, []string{"op", "room", "data"}, strings.ToLower(k), "accepted a message with member %q", k)
		}
	})
}
