package keys_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
)

// Replica A rotates the tenant's blob and audit keysets and writes with the
// new keys; replica B, which cached the old keysets for an hour, reads the
// new blob and verifies the new tag: it finds the newer keyset in the
// Store instead of calling them tampered with.
func TestOtherReplicaReadsBlobsAndVerifiesTagsMadeAfterARotation(t *testing.T) {
	e := newEnv(t)
	a := e.manager(t)
	b := e.manager(t, withMaxAge(time.Hour))
	id, ctx := provision(t, a, "replica")
	_, err := b.StreamingAEAD(ctx) // B caches the keysets before the rotation
	require.NoError(t, err)
	_, err = b.MAC(ctx)
	require.NoError(t, err)

	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeBlob))
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeAudit))

	sa, err := a.StreamingAEAD(ctx)
	require.NoError(t, err)
	var blob bytes.Buffer
	w, err := sa.NewEncryptingWriter(&blob, []byte("obj"))
	require.NoError(t, err)
	plain := bytes.Repeat([]byte("blob after rotation "), 1000) // several segments
	_, err = w.Write(plain)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	ma, err := a.MAC(ctx)
	require.NoError(t, err)
	tag, err := ma.ComputeMAC([]byte("entry"))
	require.NoError(t, err)

	sb, err := b.StreamingAEAD(ctx)
	require.NoError(t, err)
	r, err := sb.NewDecryptingReader(bytes.NewReader(blob.Bytes()), []byte("obj"))
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err, "a blob written after the rotation opens on the other replica")
	require.Equal(t, plain, got)

	mb, err := b.MAC(ctx)
	require.NoError(t, err)
	require.NoError(t, mb.VerifyMAC(tag, []byte("entry")), "a tag made after the rotation verifies on the other replica")

	// Still tamper-evident: a changed blob or entry fails, with the newer
	// keysets loaded.
	bad := bytes.Clone(blob.Bytes())
	bad[len(bad)/2] ^= 1
	r, err = sb.NewDecryptingReader(bytes.NewReader(bad), []byte("obj"))
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.ErrorIs(t, err, keys.ErrDecrypt)
	require.ErrorIs(t, mb.VerifyMAC(tag, []byte("entry!")), keys.ErrInvalidMAC)
}

// One MAC / StreamingAEAD kept for several items (an audit-chain
// verifier) follows a rotation on another replica for every item, not only
// the first within RefreshInterval.
func TestKeptMACAndStreamFollowARotationForEveryItem(t *testing.T) {
	e := newEnv(t)
	a := e.manager(t)
	b := e.manager(t, withMaxAge(time.Hour))
	id, ctx := provision(t, a, "r3")
	mb, err := b.MAC(ctx)
	require.NoError(t, err)
	sb, err := b.StreamingAEAD(ctx)
	require.NoError(t, err)
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeAudit))
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeBlob))
	ma, err := a.MAC(ctx)
	require.NoError(t, err)
	sa, err := a.StreamingAEAD(ctx)
	require.NoError(t, err)
	var macErrs, blobErrs []error
	for i := range 2 {
		entry := []byte{byte('a' + i)}
		tag, err := ma.ComputeMAC(entry)
		require.NoError(t, err)
		macErrs = append(macErrs, mb.VerifyMAC(tag, entry))
		var blob bytes.Buffer
		w, err := sa.NewEncryptingWriter(&blob, entry)
		require.NoError(t, err)
		_, err = w.Write([]byte("x"))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		r, err := sb.NewDecryptingReader(bytes.NewReader(blob.Bytes()), entry)
		require.NoError(t, err)
		_, err = io.ReadAll(r)
		blobErrs = append(blobErrs, err)
	}
	require.NoError(t, errors.Join(append(macErrs, blobErrs...)...))
}

// The context the MAC was made with has ended (the request that made the
// verifier returned): the kept MAC still refreshes, and so does a new one.
func TestKeptMACRefreshesAfterItsContextEnded(t *testing.T) {
	e := newEnv(t)
	a := e.manager(t)
	b := e.manager(t, withMaxAge(time.Hour))
	id, ctx := provision(t, a, "r3b")
	cctx, cancel := context.WithCancel(ctx)
	mb, err := b.MAC(cctx)
	require.NoError(t, err)
	cancel()
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeAudit))
	ma, err := a.MAC(ctx)
	require.NoError(t, err)
	tag, err := ma.ComputeMAC([]byte("e"))
	require.NoError(t, err)
	require.NoError(t, mb.VerifyMAC(tag, []byte("e")), "the kept MAC refreshes though its context ended")
	fresh, err := b.MAC(ctx)
	require.NoError(t, err)
	require.NoError(t, fresh.VerifyMAC(tag, []byte("e")), "a fresh MAC with a live ctx right after")
}
