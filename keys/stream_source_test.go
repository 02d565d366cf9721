package keys_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
)

// failAfter reads n bytes of r, then fails with err.
type failAfter struct {
	r   io.Reader
	n   int
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// A source that fails while a blob is read: the error still matches
// ErrDecrypt (the stream did not authenticate to its end) and also the
// source's own error, in the first segment as later.
func TestBlobStreamKeepsTheSourceErrorAsCause(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "iosource")
	sa, err := m.StreamingAEAD(ctx)
	require.NoError(t, err)
	var blob bytes.Buffer
	w, err := sa.NewEncryptingWriter(&blob, nil)
	require.NoError(t, err)
	_, err = w.Write(bytes.Repeat([]byte("x"), 20000))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	boom := errors.New("connection reset")
	for _, at := range []int{100, 10000} {
		r, err := sa.NewDecryptingReader(&failAfter{r: bytes.NewReader(blob.Bytes()), n: at, err: boom}, nil)
		require.NoError(t, err)
		_, err = io.ReadAll(r)
		require.ErrorIs(t, err, boom, "source failing after %d bytes", at)
		require.ErrorIs(t, err, keys.ErrDecrypt)
	}
}
