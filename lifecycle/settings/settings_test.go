package settings_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestPutGetHistory: versions count from 1, Get returns the latest, At
// and History every revision, with actor and time.
func TestPutGetHistory(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	_, ctx := e.newTenant(t, "hist")
	_, err := e.s.Get(ctx, settings.SectionRTM)
	require.ErrorIs(t, err, settings.ErrNotFound)

	rtm := settings.DefaultRTM()
	v, err := e.s.Put(ctx, rtm, 0, "alice@acme.example")
	require.NoError(t, err)
	require.Equal(t, int64(1), v)
	rtm.Statuses = append(rtm.Statuses, "VERIFIED")
	v, err = e.s.Put(ctx, rtm, 1, "bob@acme.example")
	require.NoError(t, err)
	require.Equal(t, int64(2), v)

	rev, err := e.s.Get(ctx, settings.SectionRTM)
	require.NoError(t, err)
	require.Equal(t, int64(2), rev.Version)
	require.Equal(t, "bob@acme.example", rev.Actor)
	require.Equal(t, rtm, rev.Value)
	first, err := e.s.At(ctx, settings.SectionRTM, 1)
	require.NoError(t, err)
	require.Equal(t, settings.DefaultRTM(), first.Value)
	_, err = e.s.At(ctx, settings.SectionRTM, 3)
	require.ErrorIs(t, err, settings.ErrNotFound)
	hist, err := e.s.History(ctx, settings.SectionRTM)
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, []int64{1, 2}, []int64{hist[0].Version, hist[1].Version})
	require.False(t, hist[1].Time.Before(hist[0].Time))
}
