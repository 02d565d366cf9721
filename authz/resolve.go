package authz

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/rtmx-ai/tenancy/tenant"
)

// A Resolver finds the tenant a request names, in its path or host, so
// that the middleware can refuse a token of another tenant. It returns
// named false when the request names no tenant, and an error when what
// names a tenant is not a tenant ID (the middleware answers 403 to both
// an error and a tenant other than the token's, without saying which).
// A Resolver must read only what the client cannot forge past the
// service's own routing: not headers such as X-Forwarded-Host, unless a
// proxy the service trusts sets them.
type Resolver func(r *http.Request) (id tenant.ID, named bool, err error)

// errRouting is the error of PathValue before the request was routed.
var errRouting = errors.New("authz: the PathValue resolver ran before a ServeMux routed the request: mount the middleware on each route, inside the mux")

// PathValue returns a Resolver that reads the tenant from the path
// wildcard name of the http.ServeMux pattern that routed the request
// (r.PathValue(name), as "/t/{tenant}/items" gives it). A pattern without
// that wildcard names no tenant. The middleware must then run inside the
// mux (mux.Handle(pattern, mw.Handler(h))): before routing there are no
// path values, and the resolver fails closed (500) instead of letting the
// request through unchecked.
func PathValue(name string) Resolver {
	wildcard := "{" + name + "}"
	rest := "{" + name + "...}"
	return func(r *http.Request) (tenant.ID, bool, error) {
		if r.Pattern == "" {
			return tenant.ID{}, false, errRouting
		}
		if !strings.Contains(r.Pattern, wildcard) && !strings.Contains(r.Pattern, rest) {
			return tenant.ID{}, false, nil
		}
		id, err := tenant.ParseID(r.PathValue(name))
		if err != nil {
			return tenant.ID{}, true, notID("path value "+name, err)
		}
		return id, true, nil
	}
}

// PathPrefix returns a Resolver that reads the tenant from the path
// segment after prefix (which must start and end with "/": "/t/" reads
// "acme" from "/t/acme/items"; "/" reads the first segment), for a
// middleware mounted before routing. Segments are compared unescaped, as
// ServeMux matches them ("/%74/acme" is under "/t/"), and a path whose
// prefix or tenant segment a router decoding the whole path would read
// otherwise (an escaped '/' in them) is refused. A path without the
// prefix names no tenant; one with an empty, "." or ".." segment anywhere
// (escaped or not) is refused, since a router that cleans paths would
// route it to another tenant. A prefix that breaks the rule makes the
// resolver fail closed (500).
func PathPrefix(prefix string) Resolver {
	want, ok := prefixSegments(prefix)
	return func(r *http.Request) (tenant.ID, bool, error) {
		if !ok {
			return tenant.ID{}, false, errBadPrefix
		}
		// A router that cleans paths itself would see another tenant in
		// "/t/a/../b", "/t/a/%2e%2e/b" or "//t/b": refuse dot and empty
		// segments, wherever they are.
		decoded := strings.Split(strings.TrimSuffix(r.URL.Path, "/"), "/")
		for _, seg := range decoded[1:] {
			if seg == "" || seg == "." || seg == ".." {
				return tenant.ID{}, true, errors.New("authz: path: empty or dot segment")
			}
		}
		// ServeMux's view: escaped segments, each unescaped.
		escaped := strings.Split(r.URL.EscapedPath(), "/")
		for i, seg := range escaped {
			s, err := unescapeSegment(seg)
			if err != nil {
				return tenant.ID{}, true, refuse("path: bad percent-encoding", tenant.ErrInvalidID)
			}
			escaped[i] = s
		}
		// The view of a router that routes on the decoded path.
		a, aNamed := segmentAfter(escaped, want)
		b, bNamed := segmentAfter(strings.Split(r.URL.Path, "/"), want)
		switch {
		case !aNamed && !bNamed:
			return tenant.ID{}, false, nil
		case aNamed != bNamed || a != b:
			return tenant.ID{}, true, refuse("path: an escaped '/' in the prefix or tenant segment", tenant.ErrInvalidID)
		}
		id, err := tenant.ParseID(a)
		if err != nil {
			return tenant.ID{}, true, notID("path segment after "+prefix, err)
		}
		return id, true, nil
	}
}

// errBadPrefix is the error of a PathPrefix resolver whose prefix breaks
// its rule: a 500, never a request let through unchecked.
var errBadPrefix = fmt.Errorf("authz: %w: PathPrefix: the prefix must start and end with '/' and hold no empty, dot or escaped segment", ErrInvalidConfig)

// prefixSegments returns the segments of a PathPrefix prefix, and whether
// it follows the rule.
func prefixSegments(prefix string) ([]string, bool) {
	if prefix == "/" {
		return nil, true
	}
	if len(prefix) < 3 || prefix[0] != '/' || prefix[len(prefix)-1] != '/' || strings.Contains(prefix, "%") {
		return nil, false
	}
	segs := strings.Split(prefix[1:len(prefix)-1], "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return nil, false
		}
	}
	return segs, true
}

// segmentAfter returns the segment of path segments segs (segs[0] is the
// empty one before the leading '/') that follows the prefix segments want,
// and whether segs start with want and have a segment after them.
func segmentAfter(segs, want []string) (string, bool) {
	if len(segs) < len(want)+2 || segs[0] != "" {
		return "", false
	}
	for i, w := range want {
		if segs[i+1] != w {
			return "", false
		}
	}
	return segs[len(want)+1], true
}

// notID is the error of a resolver for what is not a tenant ID (err, from
// tenant.ParseID or ParseDNSLabel): the rule, not the input.
func notID(where string, err error) error {
	rule := "not a tenant ID"
	if ie, ok := errors.AsType[*tenant.IDError](err); ok {
		rule += ": " + ie.Rule
	}
	return refuse(where+": "+rule, tenant.ErrInvalidID)
}

func unescapeSegment(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return "", errors.New("bad percent-encoding")
		}
		b.WriteByte(byte(unhex(s[i+1])<<4 | unhex(s[i+2])))
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// Subdomain returns a Resolver that reads the tenant from the first label
// of the request's Host under parent ("acme.example.com" under
// "example.com" is acme's; a label is tenant.ID.DNSLabel, parsed with
// tenant.ParseDNSLabel). The host is lower-cased (DNS is
// case-insensitive), its port and one trailing dot dropped. The host
// parent itself, and hosts not under it, name no tenant; a host with
// more than one label under parent is refused. It reads r.Host only,
// never X-Forwarded-Host. parent must be a DNS name (labels of letters,
// digits and '-', no port, no wildcard); one that is not, which would
// match no host and check nothing, makes the resolver fail closed (500).
func Subdomain(parent string) Resolver {
	parent = strings.ToLower(strings.TrimSuffix(parent, "."))
	ok := dnsName(parent)
	return func(r *http.Request) (tenant.ID, bool, error) {
		if !ok {
			return tenant.ID{}, false, errBadParent
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		label, under := strings.CutSuffix(host, "."+parent)
		if !under {
			return tenant.ID{}, false, nil
		}
		if strings.Contains(label, ".") {
			return tenant.ID{}, true, errors.New("authz: host: more than one label under the parent domain")
		}
		id, err := tenant.ParseDNSLabel(label)
		if err != nil {
			return tenant.ID{}, true, notID("host", err)
		}
		return id, true, nil
	}
}

// errBadParent is the error of a Subdomain resolver whose parent is not a
// DNS name: a 500, never a request let through unchecked.
var errBadParent = fmt.Errorf("authz: %w: Subdomain: the parent must be a DNS name (labels of letters, digits and '-', no port)", ErrInvalidConfig)

// dnsName reports whether s (lower case) is labels of a-z, 0-9 and '-',
// 1 to 63 bytes each, joined by '.'.
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
