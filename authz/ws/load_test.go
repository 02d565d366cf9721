package ws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Seed verification test 4 of REQ-DEPLOY-004 ("WebSocket connections
// scoped to tenant room") under 50 concurrent real clients of each
// tenant over loopback. Both tenants use the room name "updates"; each
// tenant's server side publishes 30 messages with its canary while half
// of its clients publish one each. Every client gets all of its tenant's
// messages (the server's in order) and nothing else: no message with the
// other tenant's canary, before or after (a final fence). Every client
// first tries to join the other tenant's room by name and is refused.
// rtmx:req REQ-TEN-011
func TestTenantRoomsUnderLoad(t *testing.T) {
	const clients, messages = 50, 30
	e := newEnv(t, testConfig())
	canary := map[tenant.ID]string{e.a: "canary-of-alpha-7d1f", e.b: "canary-of-bravo-93ce"}
	other := map[tenant.ID]tenant.ID{e.a: e.b, e.b: e.a}
	want := map[tenant.ID]map[string]bool{}
	for _, id := range []tenant.ID{e.a, e.b} {
		want[id] = map[string]bool{}
		for i := range messages {
			want[id][fmt.Sprintf("server-%s-%d", canary[id], i)] = true
		}
		for i := 0; i < clients; i += 2 {
			want[id][fmt.Sprintf("client-%s-%d", canary[id], i)] = true
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := make(chan struct{})
	var joined, counted, wg sync.WaitGroup
	errs := make(chan string, 4*clients*10)
	for _, id := range []tenant.ID{e.a, e.b} {
		for i := range clients {
			joined.Add(1)
			counted.Add(1)
			wg.Go(func() {
				joinedOnce, countedOnce := sync.OnceFunc(joined.Done), sync.OnceFunc(counted.Done)
				defer joinedOnce()
				defer countedOnce()
				fail := func(format string, args ...any) {
					errs <- fmt.Sprintf("%s client %d: ", id, i) + fmt.Sprintf(format, args...)
				}
				c, _, err := dial(t, e.url(id.String()), token(t, id, time.Now().Add(time.Hour), authz.RoleEditor), nil)
				if err != nil {
					fail("dial: %v", err)
					return
				}
				o := other[id].String()
				hostile := []string{o + "/updates", "../" + o + "/updates", "tenant_" + o + ":updates", o + ":updates", "tenants/" + o + "/updates"}
				for _, room := range append(hostile, "updates") {
					b, _ := json.Marshal(map[string]string{"op": "join", "room": room})
					if err := c.Write(ctx, websocket.MessageText, b); err != nil {
						fail("write: %v", err)
						return
					}
				}
				for range hostile {
					if m := read(ctx, c); m.Op != "error" || m.Code != "invalid_room" {
						fail("a join of another tenant's room answered %+v", m)
					}
				}
				if m := read(ctx, c); m.Op != "joined" || m.Room != "updates" {
					fail("join answered %+v", m)
					return
				}
				joinedOnce()
				<-start
				if i%2 == 0 {
					b, _ := json.Marshal(map[string]any{"op": "publish", "room": "updates", "data": fmt.Sprintf("client-%s-%d", canary[id], i)})
					if err := c.Write(ctx, websocket.MessageText, b); err != nil {
						fail("publish: %v", err)
						return
					}
				}
				seen, next := map[string]bool{}, 0
				for len(seen) < len(want[id]) {
					m := read(ctx, c)
					var s string
					if m.Op != "message" || m.Room != "updates" || json.Unmarshal(m.Data, &s) != nil {
						fail("got %+v", m)
						return
					}
					switch {
					case strings.Contains(s, canary[other[id]]):
						fail("got the other tenant's %q", s)
						return
					case !want[id][s] || seen[s]:
						fail("got unexpected %q", s)
						return
					case strings.HasPrefix(s, "server-"):
						if s != fmt.Sprintf("server-%s-%d", canary[id], next) {
							fail("server message %q out of order, want %d", s, next)
						}
						next++
					}
					seen[s] = true
				}
				countedOnce()
				if m := read(ctx, c); m.Op != "message" || string(m.Data) != `"done"` {
					fail("after all of its tenant's messages, got %+v", m)
				}
			})
		}
	}
	joined.Wait()
	require.Equal(t, clients, e.clients(t, e.a))
	require.Equal(t, clients, e.clients(t, e.b))
	close(start)
	var pub sync.WaitGroup
	for _, id := range []tenant.ID{e.a, e.b} {
		pub.Go(func() {
			for i := range messages {
				e.publish(t, id, "updates", fmt.Sprintf("server-%s-%d", canary[id], i))
			}
		})
	}
	pub.Wait()
	counted.Wait()
	for _, id := range []tenant.ID{e.a, e.b} {
		require.Equal(t, clients, e.publish(t, id, "updates", "done"))
	}
	wg.Wait()
	close(errs)
	var all []string
	for s := range errs {
		all = append(all, s)
	}
	require.Empty(t, all)
}

// read reads one message; a failure is a message of Op "read error".
func read(ctx context.Context, c *websocket.Conn) msg {
	_, b, err := c.Read(ctx)
	if err != nil {
		return msg{Op: "read error", Detail: err.Error()}
	}
	var m msg
	if err := json.Unmarshal(b, &m); err != nil {
		return msg{Op: "bad frame", Detail: string(b)}
	}
	return m
}
