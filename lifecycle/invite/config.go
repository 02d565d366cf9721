package invite

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"net/smtp"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rtmx-ai/tenancy/store"
)

// Defaults and bounds of [Config].
const (
	DefaultTTL     = 72 * time.Hour
	MinTTL         = 5 * time.Minute
	MaxTTL         = 30 * 24 * time.Hour
	DefaultTimeout = 30 * time.Second
	MaxTimeout     = 10 * time.Minute

	maxLinkBaseLen = 512
)

// StartTLS says whether the SMTP connection must be upgraded with STARTTLS.
// The zero value is [StartTLSRequired].
type StartTLS int

const (
	// StartTLSRequired upgrades every connection with STARTTLS and fails
	// the send (ErrSend) when the server does not offer it or the
	// handshake fails. The default.
	StartTLSRequired StartTLS = iota
	// StartTLSOpportunistic upgrades when the server offers STARTTLS and
	// sends in clear text when it does not: an attacker on the path can
	// strip the offer and read the invitation link. Only for relays
	// reached over a network the platform trusts.
	StartTLSOpportunistic
	// StartTLSNone never upgrades. New accepts it only for a server on a
	// loopback address (127.0.0.0/8, ::1, localhost): a local relay or a
	// test server.
	StartTLSNone
)

// String returns "required", "opportunistic" or "none".
func (s StartTLS) String() string {
	switch s {
	case StartTLSRequired:
		return "required"
	case StartTLSOpportunistic:
		return "opportunistic"
	case StartTLSNone:
		return "none"
	}
	return "StartTLS(" + strconv.Itoa(int(s)) + ")"
}

// SMTPConfig says how invitations reach the mail server.
type SMTPConfig struct {
	// Addr is the server's host:port (required), e.g. "smtp.internal:587".
	Addr string
	// StartTLS is the TLS policy; the zero value is StartTLSRequired.
	StartTLS StartTLS
	// TLS configures the STARTTLS handshake; nil means the system's roots,
	// ServerName the host of Addr, TLS 1.2 or newer. When set, an empty
	// ServerName is filled in with the host of Addr (on a copy).
	TLS *tls.Config
	// Auth authenticates to the server (smtp.PlainAuth, ...); nil sends
	// without authenticating. net/smtp's PLAIN refuses to send the
	// password over a connection that is neither TLS nor to localhost.
	Auth smtp.Auth
	// HelloName is the name given in EHLO; "" means "localhost", as
	// net/smtp does.
	HelloName string
	// Timeout bounds one whole SMTP exchange (dial to QUIT); zero means
	// DefaultTimeout, at most MaxTimeout.
	Timeout time.Duration
}

// Config configures an [Inviter]. A zero field means the default its
// documentation names; Admin, SMTP.Addr, From and LinkBase have none and
// are required.
type Config struct {
	// Admin holds the control plane, where invitations are kept
	// (tenancy.invitations, made by [Install]) and the tenant directory
	// is read.
	Admin *store.Admin
	// SMTP says how the mail is sent.
	SMTP SMTPConfig
	// From is the sender, an address with an optional display name
	// ("RTMX <no-reply@rtmx.example>"); its bare address is the envelope
	// sender and its domain the right side of every Message-ID.
	From string
	// LinkBase is the URL of the page that takes invitations
	// ([Inviter.Handler] mounted there): the link in the mail is
	// LinkBase + "?token=" + token. It must be https (http only for a
	// loopback host, for tests), with no user info, query or fragment.
	LinkBase string
	// TTL is how long an invitation's link works after it was sent; zero
	// means DefaultTTL, from MinTTL to MaxTTL.
	TTL time.Duration
	// Now is the clock, for tests; nil means time.Now. Expiry is decided
	// with it (the database's clock is not used).
	Now func() time.Time
	// Logger receives the package's logs; nil discards them. Logs carry
	// tenant IDs, addresses and Message-IDs, never a token or its hash.
	Logger *slog.Logger
}

// validated is a Config checked and filled in.
type validated struct {
	admin     *store.Admin
	addr      string
	host      string
	startTLS  StartTLS
	tls       *tls.Config
	auth      smtp.Auth
	hello     string
	timeout   time.Duration
	from      *mail.Address
	fromHdr   string // the From header value
	msgDomain string
	linkBase  string
	ttl       time.Duration
	now       func() time.Time
	log       *slog.Logger
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("invite: %w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

func (cfg *Config) validate() (*validated, error) {
	v := &validated{admin: cfg.Admin, startTLS: cfg.SMTP.StartTLS, auth: cfg.SMTP.Auth, now: cfg.Now, log: cfg.Logger}
	if v.admin == nil {
		return nil, invalid("Config.Admin is required")
	}
	if cfg.SMTP.Addr == "" {
		return nil, invalid("Config.SMTP.Addr is required (host:port)")
	}
	host, port, err := net.SplitHostPort(cfg.SMTP.Addr)
	if err != nil || host == "" || port == "" {
		return nil, invalid("Config.SMTP.Addr %q must be host:port", cfg.SMTP.Addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, invalid("Config.SMTP.Addr %q: the port must be 1 to 65535", cfg.SMTP.Addr)
	}
	v.addr, v.host = cfg.SMTP.Addr, host
	switch v.startTLS {
	case StartTLSRequired, StartTLSOpportunistic:
	case StartTLSNone:
		if !isLoopback(host) {
			return nil, invalid("Config.SMTP.StartTLS none is allowed only for a loopback server, not %q: use StartTLSRequired", host)
		}
	default:
		return nil, invalid("Config.SMTP.StartTLS %v is not a StartTLS constant", v.startTLS)
	}
	if cfg.SMTP.TLS != nil {
		v.tls = cfg.SMTP.TLS.Clone()
		if v.tls.ServerName == "" {
			v.tls.ServerName = host
		}
	} else {
		v.tls = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	v.hello = cfg.SMTP.HelloName
	if v.hello == "" {
		v.hello = "localhost"
	} else if checkDomain(v.hello) != "" && v.hello != "localhost" {
		return nil, invalid("Config.SMTP.HelloName %q must be a host name (letters, digits, hyphens, dots)", v.hello)
	}
	switch t := cfg.SMTP.Timeout; {
	case t == 0:
		v.timeout = DefaultTimeout
	case t < 0 || t > MaxTimeout:
		return nil, invalid("Config.SMTP.Timeout %v must be positive and at most %v", t, MaxTimeout)
	default:
		v.timeout = t
	}

	if cfg.From == "" {
		return nil, invalid("Config.From is required")
	}
	if strings.ContainsAny(cfg.From, "\r\n") {
		return nil, invalid("Config.From must not contain a line break")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, invalid("Config.From %q is not one address: %v", cfg.From, err)
	}
	if rule := checkEmail(from.Address); rule != "" {
		return nil, invalid("Config.From's address %s", rule)
	}
	if rule := checkName(from.Name); from.Name != "" && rule != "" {
		return nil, invalid("Config.From's display name %s", rule)
	}
	v.from, v.fromHdr = from, from.String()
	_, v.msgDomain, _ = strings.Cut(from.Address, "@")
	v.msgDomain = strings.ToLower(v.msgDomain)

	if err := checkLinkBase(cfg.LinkBase); err != nil {
		return nil, err
	}
	v.linkBase = cfg.LinkBase

	switch t := cfg.TTL; {
	case t == 0:
		v.ttl = DefaultTTL
	case t < MinTTL || t > MaxTTL:
		return nil, invalid("Config.TTL %v must be from %v to %v", t, MinTTL, MaxTTL)
	default:
		v.ttl = t
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return v, nil
}

func checkLinkBase(s string) error {
	if s == "" {
		return invalid("Config.LinkBase is required (e.g. https://rtmx.example/invite)")
	}
	if len(s) > maxLinkBaseLen {
		return invalid("Config.LinkBase must be at most %d bytes", maxLinkBaseLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return invalid("Config.LinkBase must be ASCII without white space or control characters")
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid("Config.LinkBase %q: %v", s, err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return invalid("Config.LinkBase %q must be an https URL", s)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return invalid("Config.LinkBase %q must be https (http only for a loopback host)", s)
	case u.Host == "" || u.Opaque != "":
		return invalid("Config.LinkBase %q must be an absolute URL with a host", s)
	case u.User != nil:
		return invalid("Config.LinkBase %q must not have user info", s)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return invalid("Config.LinkBase %q must not have a query or fragment (the token is added as ?token=)", s)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
