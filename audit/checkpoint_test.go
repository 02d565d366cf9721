package audit_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/store"
)

// TestCheckpointsEveryNEntries: with CheckpointEvery 10, a checkpoint is
// recorded once ten entries have been written since the last, each MAC'd
// and covering the head of a batch.
func TestCheckpointsEveryNEntries(t *testing.T) {
	e := newEnv(t, "standard", func(_ *store.AdminConfig, _ *store.Config, c *audit.Config) {
		c.CheckpointEvery, c.CheckpointInterval = 10, time.Hour
	})
	_, ctx := e.newTenant(t, "cpn")
	for range 8 {
		e.appendN(t, ctx, 4, 4)
		time.Sleep(20 * time.Millisecond) // the checkpointer writes them, apart from the appends
	}
	e.appendN(t, ctx, 1, 1)
	cps, err := e.log.Checkpoints(ctx)
	require.NoError(t, err)
	var seqs []int64
	for _, c := range cps {
		seqs = append(seqs, c.Seq)
	}
	require.Equal(t, []int64{12, 24}, seqs, "after the batches that brought 10 or more new entries")
	rep, err := e.log.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, rep.Checkpoints)
	require.Equal(t, int64(24), rep.LastCheckpoint)
	require.NoError(t, e.log.Close(t.Context()))
	cps, err = e.log.Checkpoints(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(33), cps[len(cps)-1].Seq, "Close checkpoints what waits")
}

// TestCheckpointsEveryInterval: with a short CheckpointInterval, new
// entries get a checkpoint within about that time, without another append.
func TestCheckpointsEveryInterval(t *testing.T) {
	e := newEnv(t, "standard", func(_ *store.AdminConfig, _ *store.Config, c *audit.Config) {
		c.CheckpointEvery, c.CheckpointInterval = 1000, 50*time.Millisecond
	})
	_, ctx := e.newTenant(t, "cpt")
	e.appendN(t, ctx, 3, 3)
	waitFor(t, 5*time.Second, func() bool {
		cps, err := e.log.Checkpoints(ctx)
		require.NoError(t, err)
		return len(cps) > 0 && cps[len(cps)-1].Seq == 3
	})
	_, err := e.log.Append(context.WithoutCancel(ctx), audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess})
	require.NoError(t, err)
	waitFor(t, 5*time.Second, func() bool {
		cps, err := e.log.Checkpoints(ctx)
		require.NoError(t, err)
		return cps[len(cps)-1].Seq == 4
	})
}
