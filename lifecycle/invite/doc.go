// Package invite sends the invitation e-mail of a new tenant's first
// administrator (step 7 of REQ-DEPLOY-004's provisioning) and redeems it:
// a link with a single-use, expiring token, of which only the SHA-256 is
// stored.
//
//	if err := invite.Install(ctx, admin); err != nil { ... } // once
//	iv, err := invite.New(invite.Config{
//		Admin:    admin,
//		SMTP:     invite.SMTPConfig{Addr: "smtp.internal:587"},
//		From:     "RTMX <no-reply@rtmx.example>",
//		LinkBase: "https://rtmx.example/invite",
//	})
//	err = iv.Send(ctx, info, "admin@acme.example") // idempotent
//	http.Handle("/invite", iv.Handler())              // GET ?token=...
//
// Invitations live in the control plane, in tenancy.invitations (made by
// [Install]), one per tenant and address. [Inviter.Send] is idempotent:
// once a mail was handed to the SMTP server and recorded, calling it again
// (a resumed provisioning) sends nothing. [Inviter.Remove] deletes a
// tenant's invitations (the compensation of the step, and part of
// deprovisioning) and [Inviter.Remains] lists what is left. The package
// does not depend on package lifecycle: the provisioning engine wraps it in
// a step.
//
// # The token
//
// A token is 32 bytes from crypto/rand, written as 43 characters of
// unpadded base64url in the link (LinkBase?token=...). The database keeps
// the SHA-256 of those bytes only; the token is in the mail and nowhere else (not in
// the table, not in the log, not in any answer of the handler). Redeeming
// is one UPDATE on the hash, of an invitation sent, not used and not
// expired (Config.TTL, 72 hours by default), so two requests with the
// same token cannot both succeed. The lookup compares hashes, which the
// requester cannot choose, so its timing tells nothing about the token.
// Send draws a fresh token whenever it sends, and only the newest token of
// an invitation is stored, so only the newest link works.
//
// A token redeems only while its tenant is in the directory and in state
// provisioning or active; for a suspended tenant it is refused but not
// used up.
//
// # Sending and crashes
//
// Send commits the invitation in state sending, without a token, before
// any mail; then, holding the row's lock, it sends the mail and stores the
// token's hash and state sent in the same transaction. See [Inviter.Send]
// for the one window in which a mail can go out twice (the second with
// the only working link) and why no window leaves a working link
// unrecorded.
//
// # Security
//
// Nothing a tenant or a requester supplies reaches a mail header
// unchecked: the address must be a bare ASCII address (one, no display
// name, no quotes or comments, at most 254 bytes), the tenant's name
// must have no line breaks or control characters and is Q-encoded in the
// Subject and quoted-printable in the body. STARTTLS is required by
// default (Config.SMTP.StartTLS); clear text is allowed to a loopback
// server only. The handler sends Cache-Control: no-store and
// Referrer-Policy: no-referrer, since its URL holds the token.
//
// A GET consumes the token, as the link's single use requires; mail
// scanners that follow links before the user does (some gateways do) use
// it up. A deployment behind such a gateway should serve a page whose
// button POSTs the token to a handler of its own calling
// [Inviter.Redeem].
//
// # Errors
//
// Errors are prefixed "invite: " and wrap a sentinel: [ErrInvalidConfig]
// (New, naming the field), [ErrInvalidArgument] (Send's address or name,
// naming the rule), [ErrNotInvitable] (a tenant not in the directory, or
// in another state), [ErrSend] (the SMTP server could not be reached or
// refused the mail; the *textproto.Error of a refusal is wrapped),
// [ErrInvalidToken] (every token that does not redeem, one error so that
// the answer is no oracle; [ErrMalformedToken] also for a token of the
// wrong form) and [ErrNotInstalled].
package invite
