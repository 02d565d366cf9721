package tenanttest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
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

// refused asks for the upgrade of tenant id's feed with token ("" for
// none), as a WebSocket client does, and reports a failure if the service
// switches protocols or answers a status that grants access, or if its
// answer (body or headers) holds a needle of needles. what names the
// attempt in messages.
func (s *suite) refused(ctx context.Context, r *report, id tenant.ID, token, what string, needles map[tenant.ID][]string) {
	srv, client := s.server()
	path, err := fill(s.h.WebSocket.Path, id, nil)
	if err != nil {
		r.failf("%s: %v", what, err)
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		r.failf("%s (GET %s): %v", what, path, err)
		return
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		r.failf("%s (GET %s): %v", what, path, err)
		return
	}
	defer resp.Body.Close()
	var wrong []string
	if resp.StatusCode == http.StatusSwitchingProtocols || grants(resp.StatusCode) {
		// A switched connection's body is the connection: not read.
		wrong = append(wrong, fmt.Sprintf("status %d: the feed opened, want a refusal", resp.StatusCode))
		wrong = append(wrong, leaks(needles, "the answer", nil, resp.Header)...)
	} else {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			r.failf("%s (GET %s): reading the refusal: %v", what, path, err)
			return
		}
		wrong = append(wrong, leaks(needles, "the refusal's body", b, resp.Header)...)
	}
	if len(wrong) > 0 {
		r.failf("%s (GET %s): %s", what, path, strings.Join(wrong, "; "))
	}
}

func (s *suite) checkFeed(ctx context.Context, r *report, a Tenant) {
	ws := s.h.WebSocket
	tok, err := a.Token("")
	if err != nil {
		r.failf("tenant %s: Token(\"\"): %v", a.ID, err)
		return
	}
	// A's token does not open another tenant's feed, nor does no token,
	// nor A's token with its signature changed (a JWS) on A's own feed;
	// and no refusal carries a canary the caller may not see.
	for _, b := range s.h.Tenants {
		if b.ID == a.ID {
			continue
		}
		s.refused(ctx, r, b.ID, tok, fmt.Sprintf("tenant %s's token on tenant %s's feed", a.ID, b.ID), s.othersNeedles(a.ID))
	}
	s.refused(ctx, r, a.ID, "", fmt.Sprintf("no token on tenant %s's feed", a.ID), s.othersNeedles(tenant.ID{}))
	if forged := forgeSignature(tok); forged != "" {
		s.refused(ctx, r, a.ID, forged, fmt.Sprintf("tenant %s's token with its signature changed on its own feed", a.ID), s.othersNeedles(tenant.ID{}))
	} else {
		r.skip("the feed with a token whose signature is changed", "the tokens are not JWS: the suite cannot forge them")
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
