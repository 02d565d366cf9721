package ws

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	errGone         = &protoError{"closed", "the connection is closing"}
	errTooManyRooms = &protoError{"too_many_rooms", "the connection is in as many rooms as it may be"}
	errNotJoined    = &protoError{"not_joined", "join a room before publishing to it"}
	errNoPublish    = &protoError{"forbidden", "this connection may not publish"}
)

// client is one connection.
type client struct {
	hub    *Hub
	conn   *websocket.Conn
	p      *authz.Principal
	tenant tenant.ID
	limit  *rate.Limiter // the client's messages, read by readLoop only
	send   chan []byte   // frames for the writer
	quit   chan struct{} // closed by kill

	once   sync.Once
	code   websocket.StatusCode // set by kill before quit closes
	reason string

	rooms map[string]struct{} // guarded by hub.mu
}

// kill removes c from the hub and has its writer close the connection
// with code and reason. Only the first call counts.
func (c *client) kill(code websocket.StatusCode, reason string) {
	c.once.Do(func() {
		c.code, c.reason = code, reason
		c.hub.remove(c) // before the close frame can leave
		close(c.quit)
		c.hub.logClose(c.tenant, code, reason)
	})
}

// serve runs c until its connection ends: the writer in a goroutine, the
// reader here, and a timer that closes c when its token expires.
func (c *client) serve(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(c.writeLoop)
	expiry := time.AfterFunc(time.Until(c.p.Expires()), func() {
		c.kill(StatusTokenExpired, "token expired")
	})
	defer expiry.Stop()
	c.readLoop(ctx)
	wg.Wait()
}

// readLoop reads and handles c's messages until the connection fails.
func (c *client) readLoop(ctx context.Context) {
	for {
		typ, b, err := c.conn.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				c.kill(ce.Code, "closed by the client")
			} else {
				c.kill(websocket.StatusAbnormalClosure, "read failed")
			}
			return
		}
		if typ != websocket.MessageText {
			c.kill(websocket.StatusUnsupportedData, "text frames only")
			return
		}
		if !c.limit.Allow() {
			c.kill(websocket.StatusPolicyViolation, "too many messages")
			return
		}
		c.handle(b)
	}
}

// writeLoop writes c's frames until kill, then closes the connection.
func (c *client) writeLoop() {
	for {
		select {
		case <-c.quit:
			c.close()
			return
		default:
		}
		select {
		case <-c.quit:
			c.close()
			return
		case b := <-c.send:
			ctx, cancel := context.WithTimeout(context.Background(), c.hub.cfg.WriteTimeout)
			err := c.conn.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				c.kill(websocket.StatusPolicyViolation, "write failed or timed out")
				_ = c.conn.CloseNow()
				return
			}
		}
	}
}

// close ends the connection with the status kill set. The peer's own
// close and write failures were answered by the websocket package
// already; Close then returns at once.
func (c *client) close() {
	code := c.code
	if code == websocket.StatusAbnormalClosure || code == websocket.StatusNoStatusRcvd {
		_ = c.conn.CloseNow()
		return
	}
	_ = c.conn.Close(code, c.reason)
}

// handle answers one message.
func (c *client) handle(b []byte) {
	req, err := decode(b)
	if err != nil {
		c.fail(err)
		return
	}
	switch req.Op {
	case opJoin:
		if err := c.hub.join(c, req.Room); err != nil {
			c.fail(err)
			return
		}
		c.reply(reply{Op: opJoined, Room: req.Room})
	case opLeave:
		c.hub.leave(c, req.Room)
		c.reply(reply{Op: opLeft, Room: req.Room})
	case opPublish:
		perm := c.hub.cfg.PublishPermission
		switch {
		case perm == "" || !c.p.Can(perm):
			c.fail(errNoPublish)
		case !c.hub.member(c, req.Room):
			c.fail(errNotJoined)
		default:
			_, _ = c.hub.publish(c.tenant, req.Room, encode(reply{Op: opMessage, Room: req.Room, Data: req.Data}))
		}
	}
}

// fail sends c the error message of err.
func (c *client) fail(err error) {
	pe, ok := err.(*protoError)
	if !ok {
		pe = &protoError{"internal", "the message could not be handled"}
	}
	c.reply(reply{Op: opError, Code: pe.code, Detail: pe.detail})
}

// reply queues r for c, or disconnects c if its queue is full.
func (c *client) reply(r reply) {
	select {
	case c.send <- encode(r):
	default:
		c.kill(websocket.StatusPolicyViolation, "too slow: send queue full")
	}
}
