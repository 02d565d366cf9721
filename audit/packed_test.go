package audit_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestSeparatorOfPackedColumnsCannotShiftEntries: a batch travels to the
// database as one string per column, each value followed by the unit
// separator (0x1F). A text field holding it is refused, and nothing of
// its batch is written; details holding it (escaped in the canonical
// JSON) are stored as they were, and the entries around them keep their
// own fields.
func TestSeparatorOfPackedColumnsCannotShiftEntries(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	id, ctx := e.newTenant(t, "sep")
	for _, field := range []string{"actor", "action", "resource", "user agent"} {
		ev := audit.Event{Actor: "a", Action: "b", Resource: "c", Outcome: audit.OutcomeSuccess, UserAgent: "d"}
		switch field {
		case "actor":
			ev.Actor = "mallory\x1fadmin"
		case "action":
			ev.Action = "x\x1fy"
		case "resource":
			ev.Resource = "REQ-1\x1f"
		case "user agent":
			ev.UserAgent = "\x1f"
		}
		_, err := e.log.Append(ctx, events(1, "before")[0], ev)
		require.ErrorIs(t, err, audit.ErrInvalidEvent, field)
	}
	require.Zero(t, e.count(t, id), "a refused event writes nothing of its batch")

	evs := events(3, "alice")
	evs[1].Details = map[string]any{"note": "one\x1ftwo", "\x1fkey": "v"}
	evs[1].UserAgent = "agent/1"
	got, err := e.log.Append(ctx, evs...)
	require.NoError(t, err)
	require.Len(t, got, 3)
	c, table := e.superuser(t, id)
	rows, err := c.Query(t.Context(), `SELECT actor, resource, user_agent, details::text, mac FROM `+table+` ORDER BY seq`)
	require.NoError(t, err)
	n := 0
	for ; rows.Next(); n++ {
		var actor, resource, agent, details string
		var mac []byte
		require.NoError(t, rows.Scan(&actor, &resource, &agent, &details, &mac))
		require.Equal(t, got[n].MAC, mac)
		require.Equal(t, [3]string{"alice", evs[n].Resource, evs[n].UserAgent}, [3]string{actor, resource, agent})
		if n == 1 {
			var d map[string]string
			require.NoError(t, json.Unmarshal([]byte(details), &d))
			require.Equal(t, map[string]string{"note": "one\x1ftwo", "\x1fkey": "v"}, d)
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 3, n)
	require.True(t, bytes.Contains(got[1].Details, []byte(`\u001f`)), "canonical JSON escapes it: %s", got[1].Details)
	rep, err := e.log.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), rep.HeadSeq)
}
