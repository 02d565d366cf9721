package ws

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/rtmx-ai/tenancy/authz"
)

// Subprotocol is the WebSocket subprotocol of the hub's protocol, which
// the Hub selects when a client offers it. A browser client that carries
// its token in the subprotocol list ([Authenticate]) must offer it too:
// a browser fails a connection whose server selects none of the
// subprotocols it offered.
const Subprotocol = "tenancy.ws.v1"

// bearerPrefix starts the subprotocol that carries a token.
const bearerPrefix = "bearer."

// Authenticate returns next (the Hub) behind mw for WebSocket upgrades,
// accepting the token where a browser can put it: in the subprotocol
// list, as "bearer.<token>" beside [Subprotocol]:
//
//	new WebSocket(url, ["tenancy.ws.v1", "bearer." + token])
//
// An upgrade offering one such subprotocol is authenticated by
// mw.Authenticate with its token (every check of mw.Handler but its
// concurrency cap: MaxClientsPerTenant caps connections); any other
// request goes through mw.Handler, reading its Authorization header. An
// upgrade offering two bearer subprotocols, or one and an Authorization
// header, is refused with 401. The Hub never selects the bearer
// subprotocol, so the token is not sent back.
//
// A token in a header is seen by whatever logs request headers on the
// way (proxies, load balancers): keep such logs from recording
// Sec-WebSocket-Protocol, as they keep Authorization.
func Authenticate(mw *authz.Middleware, next http.Handler) http.Handler {
	header := mw.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, n := bearerSubprotocol(r.Header.Values("Sec-WebSocket-Protocol"))
		switch {
		case n == 0:
			header.ServeHTTP(w, r)
			return
		case n > 1:
			authz.WriteError(w, fmt.Errorf("%w: ws: more than one bearer subprotocol", authz.ErrInvalidToken))
			return
		case r.Header.Get("Authorization") != "":
			authz.WriteError(w, fmt.Errorf("%w: ws: a token both in Authorization and in a subprotocol", authz.ErrInvalidToken))
			return
		}
		ctx, err := mw.Authenticate(r, token)
		if err != nil {
			authz.WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// bearerSubprotocol returns the token of the bearer subprotocols among
// the Sec-WebSocket-Protocol header values, and how many there are.
func bearerSubprotocol(values []string) (token string, n int) {
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if strings.HasPrefix(p, bearerPrefix) {
				token, n = p[len(bearerPrefix):], n+1
			}
		}
	}
	return token, n
}
