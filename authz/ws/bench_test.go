package ws_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/tenant"
)

const benchClients = 50

// receivers reads every message of cs in the background and signals each
// on the returned channel.
func receivers(b *testing.B, cs []*websocket.Conn) <-chan struct{} {
	b.Helper()
	got := make(chan struct{}, len(cs)*4)
	for _, c := range cs {
		go func() {
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
				got <- struct{}{}
			}
		}()
	}
	return got
}

// BenchmarkFanOut is one message delivered to 50 clients over loopback,
// from the call until every client has read it: mode=hub is Hub.Publish
// to a room the 50 joined (behind authz's middleware), mode=raw the
// same frame written by a loop over the 50 server-side coder/websocket
// connections.
func BenchmarkFanOut(b *testing.B) {
	data := strings.Repeat("d", 256)
	frame := []byte(`{"op":"message","room":"bench","data":"` + data + `"}`)

	b.Run("mode=raw", func(b *testing.B) {
		var mu sync.Mutex // guards conns
		var conns []*websocket.Conn
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			ctx := c.CloseRead(context.Background())
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			<-ctx.Done()
		}))
		defer srv.Close()
		var cs []*websocket.Conn
		for range benchClients {
			c, _, err := websocket.Dial(b.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			require.NoError(b, err)
			defer c.CloseNow()
			cs = append(cs, c)
		}
		require.Eventually(b, func() bool { mu.Lock(); defer mu.Unlock(); return len(conns) == benchClients }, 5*time.Second, time.Millisecond)
		got := receivers(b, cs)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			for _, c := range conns {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := c.Write(ctx, websocket.MessageText, frame)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			for range benchClients {
				<-got
			}
		}
	})

	b.Run("mode=hub", func(b *testing.B) {
		e := newEnv(b, testConfig())
		var cs []*websocket.Conn
		for range benchClients {
			c := e.connect(b, e.a)
			join(b, c, "bench")
			cs = append(cs, c)
		}
		got := receivers(b, cs)
		ctx := tenant.NewContext(b.Context(), e.a)
		room := mustRoom(b, ctx, "bench")
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if n, err := e.hub.Publish(ctx, room, data); err != nil || n != benchClients {
				b.Fatal(n, err)
			}
			for range benchClients {
				<-got
			}
		}
	})
}
