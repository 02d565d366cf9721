package ws

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/rtmx-ai/tenancy/authz"
)

// Config configures a Hub. Start from DefaultConfig and set Directory;
// zero is not a default: NewHub refuses a config whose fields are zero
// or out of range, naming the field. Optional fields say what nil or
// empty means.
type Config struct {
	// Directory says whether a connected client's tenant is still
	// active; every CheckInterval the hub asks it for each tenant with
	// clients, and closes the connections of a tenant it does not report
	// active. Required. *store.Admin satisfies it, and so does
	// authz.StoreDirectory(db).
	Directory authz.Directory

	// CheckInterval is how often the Directory is asked: a tenant
	// suspended loses its connections at most about this long after.
	// DefaultConfig sets 5 s; at least 10 ms, at most 5 minutes.
	CheckInterval time.Duration

	// OriginPatterns are the origins, besides the request's own host,
	// from which a browser may open a connection (patterns of
	// websocket.AcceptOptions.OriginPatterns, such as "app.example.com"
	// or "https://*.example.com"). Empty: the same origin only. A
	// pattern "*" is refused: it would let any web page use a visitor's
	// credentials.
	OriginPatterns []string

	// ReadLimit is the largest frame a client may send, in bytes; a
	// larger one closes the connection (1009). DefaultConfig sets 8 KiB.
	ReadLimit int64

	// WriteTimeout bounds the write of one message to a client; a client
	// that does not take it in time is disconnected. DefaultConfig sets
	// 10 s.
	WriteTimeout time.Duration

	// SendQueue is how many messages may wait for one client; a
	// client further behind is disconnected (1008) rather than slowing
	// the hub or the publisher. DefaultConfig sets 64.
	SendQueue int

	// MaxClientsPerTenant caps each tenant's connections; one more is
	// accepted and closed at once with 1008 (policy violation).
	// DefaultConfig sets 1,000.
	MaxClientsPerTenant int

	// MaxRoomsPerClient caps the rooms one connection may be in at once.
	// DefaultConfig sets 64.
	MaxRoomsPerClient int

	// MessageRate is how many messages a second one client may send,
	// with bursts of MessageBurst; a client past it is disconnected
	// (1008), so that no client can keep the hub busy. DefaultConfig
	// sets 20 a second, bursts of 40.
	MessageRate  float64
	MessageBurst int

	// PublishPermission is the permission (authz.Principal.Can) a
	// client needs to publish to a room it is in. Empty: clients never
	// publish, only the service does (Hub.Publish). DefaultConfig sets
	// authz.PermWrite.
	PublishPermission string

	// Logger receives a record for each connection the hub closes, with
	// the reason and the tenant; nil discards them. Records never carry
	// tokens, claims, room names or message data.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the defaults filled in and no
// Directory.
func DefaultConfig() Config {
	return Config{
		CheckInterval:       5 * time.Second,
		ReadLimit:           8 << 10,
		WriteTimeout:        10 * time.Second,
		SendQueue:           64,
		MaxClientsPerTenant: 1000,
		MaxRoomsPerClient:   64,
		MessageRate:         20,
		MessageBurst:        40,
		PublishPermission:   authz.PermWrite,
	}
}

// check returns an error naming the first field of c that breaks its
// rule.
func (c *Config) check() error {
	bad := func(field, rule string) error {
		return fmt.Errorf("ws: %w: Config.%s %s", ErrInvalidConfig, field, rule)
	}
	switch {
	case c.Directory == nil:
		return bad("Directory", "is required")
	case c.CheckInterval < 10*time.Millisecond:
		return bad("CheckInterval", "must be at least 10ms")
	case c.CheckInterval > 5*time.Minute:
		return bad("CheckInterval", "must be at most 5m0s")
	case c.ReadLimit < 64:
		return bad("ReadLimit", "must be at least 64 bytes")
	case c.WriteTimeout <= 0:
		return bad("WriteTimeout", "must be positive")
	case c.SendQueue < 1:
		return bad("SendQueue", "must be at least 1")
	case c.MaxClientsPerTenant < 1:
		return bad("MaxClientsPerTenant", "must be at least 1")
	case c.MaxRoomsPerClient < 1:
		return bad("MaxRoomsPerClient", "must be at least 1")
	case !(c.MessageRate > 0) || math.IsInf(c.MessageRate, 0):
		return bad("MessageRate", "must be positive and finite")
	case c.MessageBurst < 1:
		return bad("MessageBurst", "must be at least 1")
	}
	for i, p := range c.OriginPatterns {
		switch p {
		case "":
			return bad(fmt.Sprintf("OriginPatterns[%d]", i), "is empty")
		case "*", "*://*":
			return bad(fmt.Sprintf("OriginPatterns[%d]", i), "allows every origin")
		}
	}
	return nil
}
