package tenanttest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/rtmx-ai/tenancy/tenant"
)

// wsLinger is how long a feed is read after the tenant's own canary came,
// for another tenant's message that would come after it.
const wsLinger = 250 * time.Millisecond

// wsWait bounds how long, in all, the suite waits on a tenant's feed for
// the confirmations of the Joins and for the tenant's own change.
const wsWait = 10 * time.Second

// checkWebSocket is verification test 4: a tenant's connection to its
// feed gets its own changes and none of another tenant's, and its token
// does not open another tenant's feed.
func (s *suite) checkWebSocket(ctx context.Context, r *report) {
	for _, a := range s.h.Tenants {
		if ctx.Err() != nil {
			return
		}
		s.checkFeed(ctx, r, a)
	}
}

// dialFeed connects to tenant id's feed with token ("" for none).
func (s *suite) dialFeed(ctx context.Context, id tenant.ID, token string) (*websocket.Conn, *http.Response, string, error) {
	srv, client := s.server()
	path, err := fill(s.h.WebSocket.Path, id, nil)
	if err != nil {
		return nil, nil, path, err
	}
	opts := &websocket.DialOptions{HTTPClient: client, HTTPHeader: http.Header{}}
	if token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+path, opts)
	return c, resp, path, err
}

func (s *suite) checkFeed(ctx context.Context, r *report, a Tenant) {
	ws := s.h.WebSocket
	tok, err := a.Token("")
	if err != nil {
		r.failf("tenant %s: Token(\"\"): %v", a.ID, err)
		return
	}
	// A's token does not open another tenant's feed, nor does no token.
	for _, b := range s.h.Tenants {
		if b.ID == a.ID {
			continue
		}
		c, resp, path, err := s.dialFeed(ctx, b.ID, tok)
		if err == nil {
			c.CloseNow()
			r.failf("tenant %s's token opened tenant %s's feed (GET %s): status %d, want a refusal", a.ID, b.ID, path, resp.StatusCode)
		}
	}
	if c, resp, path, err := s.dialFeed(ctx, a.ID, ""); err == nil {
		c.CloseNow()
		r.failf("no token opened tenant %s's feed (GET %s): status %d, want a refusal", a.ID, path, resp.StatusCode)
	}

	c, resp, path, err := s.dialFeed(ctx, a.ID, tok)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		r.failf("tenant %s connecting to its own feed (GET %s): status %d: %v", a.ID, path, status, err)
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(maxBody)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	msgs := make(chan []byte, 64)
	readErr := make(chan error, 1) // the error that ended the reads, once msgs is closed
	go func() {
		defer close(msgs)
		for {
			_, b, err := c.Read(rctx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case msgs <- b:
			case <-rctx.Done():
				readErr <- rctx.Err()
				return
			}
		}
	}()
	var leaked []string
	judge := func(b []byte) {
		leaked = append(leaked, leaks(s.othersNeedles(a.ID), fmt.Sprintf("a message %q", abbrev(b)), b, nil)...)
	}
	wait, cancelWait := context.WithTimeout(ctx, wsWait)
	defer cancelWait()
	next := func(what string) ([]byte, bool) {
		select {
		case b, ok := <-msgs:
			if !ok {
				r.failf("tenant %s's feed (GET %s) closed while waiting for %s: %v", a.ID, path, what, <-readErr)
				return nil, false
			}
			judge(b)
			return b, true
		case <-wait.Done():
			r.failf("tenant %s's feed (GET %s): no %s within %s", a.ID, path, what, wsWait)
			return nil, false
		}
	}
	for i, j := range ws.Join {
		if err := c.Write(ctx, websocket.MessageText, []byte(j)); err != nil {
			r.failf("tenant %s's feed (GET %s): sending Join[%d] %q: %v", a.ID, path, i, j, err)
			return
		}
		if ws.Joined == nil {
			continue
		}
		for {
			b, ok := next(fmt.Sprintf("the confirmation of Join[%d] %q", i, j))
			if !ok {
				return
			}
			if ws.Joined(i, b) {
				break
			}
		}
	}
	// Changes in every other tenant, then in A.
	for _, b := range s.h.Tenants {
		if b.ID == a.ID {
			continue
		}
		if _, _, err := s.plant(ctx, b); err != nil {
			r.failf("Harness.Plant for tenant %s: %v", b.ID, err)
			return
		}
	}
	_, own, err := s.plant(ctx, a)
	if err != nil {
		r.failf("Harness.Plant for tenant %s: %v", a.ID, err)
		return
	}
	for {
		b, ok := next(fmt.Sprintf("a message with its own canary %s%s after Plant", canaryPrefix, own))
		if !ok {
			break
		}
		if strings.Contains(string(b), own) {
			break
		}
	}
	// Read on a little, for another tenant's message after A's.
	linger := time.NewTimer(wsLinger)
	defer linger.Stop()
wait:
	for {
		select {
		case b, ok := <-msgs:
			if !ok {
				break wait
			}
			judge(b)
		case <-linger.C:
			break wait
		}
	}
	for _, l := range leaked {
		r.failf("tenant %s's feed (GET %s): %s", a.ID, path, l)
	}
}
