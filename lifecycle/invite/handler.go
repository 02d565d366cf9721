package invite

import (
	"errors"
	"net/http"
	"net/url"
)

// Handler returns the handler of the invitation link, to mount at
// Config.LinkBase. A GET with exactly one token parameter redeems it
// ([Inviter.Redeem]):
//
//   - 200 OK the first time, with a page saying the invitation is accepted
//     (a real deployment would continue to account setup from there);
//   - 410 Gone for a token that does not redeem (used, expired, unknown,
//     removed: one answer for all);
//   - 400 Bad Request for a missing, repeated or malformed token;
//   - 405 Method Not Allowed for any method but GET (HEAD too: it would
//     use the token up for a response without a body);
//   - 500 Internal Server Error when the database fails.
//
// No response repeats the token or the address. Every response has
// Cache-Control: no-store, Referrer-Policy: no-referrer (the page's URL
// holds the token), X-Content-Type-Options: nosniff and a
// Content-Security-Policy that allows nothing to load.
func (iv *Inviter) Handler() http.Handler {
	return http.HandlerFunc(iv.serveHTTP)
}

func (iv *Inviter) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	reply := func(code int, text string) {
		w.WriteHeader(code)
		_, _ = w.Write([]byte(text + "\n"))
	}
	if r.Method != http.MethodGet {
		h.Set("Allow", http.MethodGet)
		reply(http.StatusMethodNotAllowed, "Only GET is allowed here.")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q["token"]) != 1 {
		reply(http.StatusBadRequest, "The link is incomplete: open it exactly as it was in the invitation e-mail.")
		return
	}
	_, err = iv.Redeem(r.Context(), q["token"][0])
	switch {
	case err == nil:
		reply(http.StatusOK, "The invitation is accepted. You can now set up your administrator account.")
	case errors.Is(err, ErrMalformedToken):
		reply(http.StatusBadRequest, "The link is incomplete: open it exactly as it was in the invitation e-mail.")
	case errors.Is(err, ErrInvalidToken):
		reply(http.StatusGone, "This invitation link is no longer valid: it was used already, has expired, or was withdrawn. Ask for a new invitation.")
	default:
		iv.cfg.log.ErrorContext(r.Context(), "invite: redeeming a token failed", "error", err)
		reply(http.StatusInternalServerError, "The invitation could not be checked just now. Try the link again later.")
	}
}
