package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/rtmx-ai/tenancy/authz/ws"
)

// joinFeed is the message that joins the feed's room.
const joinFeed = `{"op":"join","room":"` + feedRoom + `"}`

// joinedFeed is the hub's confirmation of joinFeed.
const joinedFeed = `{"op":"joined","room":"` + feedRoom + `"}`

// dialFeed connects to the feed at rawURL (http:// or ws://) with token
// and joins its room; the first message read is the confirmation.
func dialFeed(ctx context.Context, rawURL, token string) (*websocket.Conn, error) {
	u := rawURL
	switch {
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{ws.Subprotocol},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("connect to %s: %s: %w", rawURL, resp.Status, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", rawURL, err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(joinFeed)); err != nil {
		c.CloseNow()
		return nil, err
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	if string(msg) != joinedFeed {
		c.CloseNow()
		return nil, fmt.Errorf("join the feed: the hub answered %s", msg)
	}
	return c, nil
}

// watchFeed prints every message of the feed at rawURL until ctx ends or
// the hub closes the connection.
func watchFeed(ctx context.Context, out io.Writer, rawURL, token string) error {
	if token == "" {
		return fmt.Errorf("-watch needs -token")
	}
	c, err := dialFeed(ctx, rawURL, token)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	fmt.Fprintf(out, "watching %s (Ctrl-C to stop)\n", rawURL)
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", msg)
	}
}
