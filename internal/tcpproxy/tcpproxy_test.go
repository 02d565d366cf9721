package tcpproxy_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/tcpproxy"
)

// TestForwardsAndCuts: bytes pass both ways through the proxy; Cut closes
// the client's connection (its next read fails) and new connections work.
func TestForwardsAndCuts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					_, _ = c.Write([]byte("echo " + line))
				}
			}()
		}
	}()
	p := tcpproxy.New(t, ln.Addr().String())
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}
	c, r := dial()
	_, err = c.Write([]byte("one\n"))
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "echo one\n", line)
	require.Equal(t, 1, p.Conns())

	require.Equal(t, 1, p.Cut())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, _ = c.Write([]byte("two\n"))
	_, err = r.ReadString('\n')
	require.Error(t, err, "the cut connection is closed")
	require.NotContains(t, err.Error(), "timeout")

	c2, r2 := dial()
	_, err = c2.Write([]byte("three\n"))
	require.NoError(t, err)
	line, err = r2.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "echo three\n", line)

	// A partition cuts c2 and closes new connections until healed.
	require.Equal(t, 1, p.Partition())
	c3, r3 := dial()
	require.NoError(t, c3.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, _ = c3.Write([]byte("four\n"))
	_, err = r3.ReadString('\n')
	require.Error(t, err, "no connection gets through a partition")
	require.NotContains(t, err.Error(), "timeout")
	require.Equal(t, 0, p.Conns())
	p.Heal()
	c4, r4 := dial()
	_, err = c4.Write([]byte("five\n"))
	require.NoError(t, err)
	line, err = r4.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "echo five\n", line)
}
