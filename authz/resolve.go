package authz

import (
	"errors"
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
// "acme" from "/t/acme/items"), for a middleware mounted before routing.
// The segment is read from the escaped path and unescaped, as ServeMux
// unescapes path values. A path without the prefix names no tenant; one
// with an empty, "." or ".." segment anywhere (escaped or not) is refused,
// since a router that cleans paths would route it to another tenant.
func PathPrefix(prefix string) Resolver {
	return func(r *http.Request) (tenant.ID, bool, error) {
		// A router that cleans paths itself would see another tenant in
		// "/t/a/../b", "/t/a/%2e%2e/b" or "//t/b": refuse dot and empty
		// segments, wherever they are.
		for _, seg := range strings.Split(strings.TrimSuffix(r.URL.Path, "/"), "/")[1:] {
			if seg == "" || seg == "." || seg == ".." {
				return tenant.ID{}, true, errors.New("authz: path: empty or dot segment")
			}
		}
		rest, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix)
		if !ok || prefix == "" {
			return tenant.ID{}, false, nil
		}
		seg, _, _ := strings.Cut(rest, "/")
		s, err := unescapeSegment(seg)
		if err != nil {
			return tenant.ID{}, true, refuse("path segment after "+prefix+": bad percent-encoding", tenant.ErrInvalidID)
		}
		id, err := tenant.ParseID(s)
		if err != nil {
			return tenant.ID{}, true, notID("path segment after "+prefix, err)
		}
		return id, true, nil
	}
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
// never X-Forwarded-Host.
func Subdomain(parent string) Resolver {
	parent = strings.ToLower(strings.TrimSuffix(parent, "."))
	return func(r *http.Request) (tenant.ID, bool, error) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		label, ok := strings.CutSuffix(host, "."+parent)
		if !ok || parent == "" {
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
