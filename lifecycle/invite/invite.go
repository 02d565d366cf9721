package invite

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// tokenBytes is the size of a token's random part; tokenLen the length of
// its text (unpadded base64url).
const (
	tokenBytes = 32
	tokenLen   = 43
)

// tokenEncoding has one spelling per token: the unused low bits of the
// last character must be zero.
var tokenEncoding = base64.RawURLEncoding.Strict()

// Inviter sends invitations and redeems their tokens. It is safe for
// concurrent use.
type Inviter struct {
	cfg *validated
	// afterDeliver, if set (by tests), runs after the SMTP server accepted
	// a mail and before it is recorded; an error fails the recording.
	afterDeliver func() error
}

// Redeemed is what a redeemed token was for.
type Redeemed struct {
	// Tenant is the tenant the invitation is to.
	Tenant tenant.ID
	// Email is the address the invitation was sent to.
	Email string
}

// New checks cfg and returns an Inviter. It does not connect anywhere; run
// [Install] once before using it.
func New(cfg Config) (*Inviter, error) {
	v, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	return &Inviter{cfg: v}, nil
}

// invitable reports whether a tenant in state s can be sent, or can redeem,
// an invitation.
func invitable(s tenant.State) bool {
	return s == tenant.StateProvisioning || s == tenant.StateActive
}

// errSent ends the sending transaction of an invitation sent already.
var errSent = errors.New("sent already")

// Send sends the invitation to administer the tenant info.ID, named as
// the directory names it (info's other fields are not used), to email, and
// records it in the control plane. It is
// idempotent per tenant and address (addresses compare without regard to
// case): once an invitation has been sent, Send does nothing and returns
// nil, whether or not the link was used or has expired. To invite the
// same address again, [Inviter.Remove] the tenant's invitations first.
//
// The tenant must be in the directory, in state provisioning or active
// (ErrNotInvitable otherwise); email must be a bare address (no display
// name, one address, ASCII, at most 254 bytes) and the tenant's name one
// without line breaks or control characters (ErrInvalidArgument
// otherwise, with nothing stored or sent).
//
// How a crash is handled: Send first commits a row in state sending,
// without a token. Then, holding that row's lock (so that concurrent Sends
// for the same address take turns, and the second one finds it sent), it
// draws a fresh token, hands the mail to the SMTP server and, in the same
// transaction, stores the token's SHA-256 and state sent. If the mail
// cannot be handed over, Send returns an error wrapping ErrSend and the
// row stays in sending with no token: the next Send tries again.
//
// The window: if the process dies, or the database fails, after the server
// accepted the mail and before the commit (or the connection breaks after
// the end of the data, before the server's answer arrives), that mail is
// delivered but its token was never stored, so its link does not work;
// the next Send (a resume) finds the row in sending, draws another token
// and sends again. The recipient then has two mails, of which the second
// has the only working link; the window is one commit long. Each mail has
// a Message-ID of its own (a receiving system that drops a message whose
// Message-ID it has seen, as some do, would otherwise drop the working
// one), and all the mails of one invitation name the same thread in
// References, so that mail clients show them together. No window leaves
// a working link unrecorded, and only the newest token of an address ever
// redeems.
//
// Send holds an admin connection, and the row's lock, for the SMTP
// exchange (at most Config.SMTP.Timeout).
func (iv *Inviter) Send(ctx context.Context, info tenant.Info, email string) error {
	c := iv.cfg
	if info.ID.IsZero() {
		return fmt.Errorf("invite: send: %w: the tenant ID is zero", ErrInvalidArgument)
	}
	if rule := checkEmail(email); rule != "" {
		return fmt.Errorf("invite: send for tenant %s: %w: email %s", info.ID, ErrInvalidArgument, rule)
	}
	cur, err := c.admin.Tenant(ctx, info.ID)
	switch {
	case errors.Is(err, store.ErrUnknownTenant):
		return fmt.Errorf("invite: send for tenant %s: %w: %w", info.ID, ErrNotInvitable, err)
	case err != nil:
		return fmt.Errorf("invite: send for tenant %s: %w", info.ID, err)
	case !invitable(cur.State):
		return fmt.Errorf("invite: send for tenant %s: %w: it is %s (provisioning or active needed)", info.ID, ErrNotInvitable, cur.State)
	}
	// The mail names the tenant as the directory does, not as the caller
	// says: a caller's name cannot make an invitation look like another's.
	info = cur
	if rule := checkName(info.Name); rule != "" {
		return fmt.Errorf("invite: send for tenant %s: %w: the tenant's name %s", info.ID, ErrInvalidArgument, rule)
	}
	key := strings.ToLower(email)
	newThread, err := newMessageID(c.msgDomain)
	if err != nil {
		return fmt.Errorf("invite: send for tenant %s: %w", info.ID, err)
	}

	// The row, before any mail. An existing row still sending counts one
	// more attempt; one sent stays as it is.
	err = c.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenancy.invitations (tenant_id, email_key, email, state, thread_id, created_at)
VALUES ($1, $2, $3, 'sending', $4, $5)
ON CONFLICT (tenant_id, email_key) DO UPDATE SET attempts = invitations.attempts + 1
  WHERE invitations.state = 'sending'`, info.ID.String(), key, email, newThread, c.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("invite: send for tenant %s: recording the invitation: %w", info.ID, notInstalled(err))
	}

	// Under the row's lock: send, then record the token and the state.
	var (
		to, thread string
		msgID      string
		attempts   int
		expires    time.Time
		delivered  bool
	)
	err = c.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state, email, thread_id, attempts FROM tenancy.invitations
WHERE tenant_id = $1 AND email_key = $2 FOR UPDATE`, info.ID.String(), key).Scan(&state, &to, &thread, &attempts)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("the invitation was removed while being sent")
		case err != nil:
			return err
		case state == "sent":
			return errSent
		}
		token, hash, err := newToken()
		if err != nil {
			return err
		}
		if msgID, err = newMessageID(c.msgDomain); err != nil {
			return err
		}
		now := c.now()
		expires = now.Add(c.ttl)
		msg := iv.message(info, to, msgID, thread, c.linkBase+"?token="+token, now, expires)
		if err := iv.deliver(ctx, to, msg); err != nil {
			return fmt.Errorf("%w to %s via %s: %w", ErrSend, to, c.addr, err)
		}
		delivered = true
		if iv.afterDeliver != nil {
			if err := iv.afterDeliver(); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE tenancy.invitations
SET state = 'sent', token_hash = $3, message_id = $4, sent_at = $5, expires_at = $6
WHERE tenant_id = $1 AND email_key = $2`, info.ID.String(), key, hash[:], msgID, now, expires)
		return err
	})
	log := c.log.With("tenant_id", info.ID, "email", to, "thread_id", thread, "message_id", msgID)
	switch {
	case errors.Is(err, errSent):
		log.InfoContext(ctx, "invite: invitation sent already; nothing to do")
		return nil
	case err != nil && delivered:
		log.ErrorContext(ctx, "invite: the mail was handed to the SMTP server but not recorded: its link does not work, and the next Send sends a new one", "error", err)
		return fmt.Errorf("invite: send for tenant %s: the mail to %s went out but recording it failed (its link does not work; Send again): %w", info.ID, to, err)
	case err != nil:
		log.WarnContext(ctx, "invite: sending failed; the invitation stays unsent", "error", err)
		return fmt.Errorf("invite: send for tenant %s: %w", info.ID, err)
	}
	if attempts > 0 {
		// attempts counts the Send calls that found the invitation not sent
		// yet: failed ones, ones that died, and ones waiting behind this.
		log.WarnContext(ctx, "invite: invitation sent after earlier Send calls found it unsent; if one of them reached the SMTP server (a crash or a database failure after the mail was accepted), its mail arrived with a link that no longer works", "earlier_calls", attempts)
	}
	log.InfoContext(ctx, "invite: invitation sent", "expires_at", expires)
	return nil
}

// Redeem uses the invitation token once: it returns the tenant and address
// the invitation was for and marks the invitation used, atomically (one
// transaction holding the tenant's directory row FOR SHARE, so that a
// concurrent state change comes wholly before or after it, and one UPDATE
// on the token's hash, of an invitation sent, not used and not expired by
// the Config's clock). Every token that does not redeem —
// malformed, unknown, used, expired, replaced by a newer one, removed, or
// of a tenant not in state provisioning or active — gives an error
// wrapping ErrInvalidToken (and ErrMalformedToken for a malformed one);
// the log says which. Other errors (the database is down) wrap neither.
//
// The token is looked up by its SHA-256, so the comparison runs on a hash
// an attacker cannot steer, not on the secret; it is never logged.
func (iv *Inviter) Redeem(ctx context.Context, token string) (Redeemed, error) {
	c := iv.cfg
	raw, ok := parseToken(token)
	if !ok {
		c.log.InfoContext(ctx, "invite: token refused", "reason", "malformed")
		return Redeemed{}, fmt.Errorf("invite: redeem: %w", ErrMalformedToken)
	}
	hash := sha256.Sum256(raw)
	refuse := func(tenantID, reason string) (Redeemed, error) {
		args := []any{"reason", reason}
		if tenantID != "" {
			args = append(args, "tenant_id", tenantID)
		}
		c.log.InfoContext(ctx, "invite: token refused", args...)
		return Redeemed{}, fmt.Errorf("invite: redeem: %w", ErrInvalidToken)
	}

	// One transaction: the tenant's directory row is read FOR SHARE, so a
	// state change (store.Admin.SetState locks the row FOR UPDATE) either
	// waits until the token is spent or has committed before, and then the
	// token of a tenant it suspended is refused and not spent.
	var (
		id                      tenant.ID
		tenantID, email, reason string
	)
	now := c.now()
	err := c.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT tenant_id FROM tenancy.invitations WHERE token_hash = $1`, hash[:]).Scan(&tenantID)
		if errors.Is(err, pgx.ErrNoRows) {
			reason = "unknown (never issued, replaced by a newer token, or removed)"
			return nil
		}
		if err != nil {
			return notInstalled(err)
		}
		if id, err = tenant.ParseID(tenantID); err != nil {
			reason = "the invitation names no valid tenant"
			return nil
		}
		var state string
		err = tx.QueryRow(ctx, `SELECT state FROM tenancy.tenants WHERE id = $1 FOR SHARE`, tenantID).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			reason = "the tenant is not in the directory"
			return nil
		case err != nil:
			return err
		case !invitable(tenant.State(state)):
			reason = "the tenant is " + state
			return nil
		}
		err = tx.QueryRow(ctx, `UPDATE tenancy.invitations SET used_at = $3
WHERE token_hash = $1 AND tenant_id = $2 AND state = 'sent' AND used_at IS NULL AND expires_at > $3
RETURNING email`, hash[:], tenantID, now).Scan(&email)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Not redeemed: find out why, for the log only.
		var used, expired bool
		err = tx.QueryRow(ctx, `SELECT used_at IS NOT NULL, expires_at <= $2 FROM tenancy.invitations WHERE token_hash = $1`,
			hash[:], now).Scan(&used, &expired)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			reason = "removed meanwhile"
		case err != nil:
			return err
		case used:
			reason = "used already"
		case expired:
			reason = "expired"
		default:
			reason = "not redeemable"
		}
		return nil
	})
	switch {
	case err != nil:
		return Redeemed{}, fmt.Errorf("invite: redeem: %w", err)
	case reason != "":
		return refuse(tenantID, reason)
	}
	c.log.InfoContext(ctx, "invite: invitation redeemed", "tenant_id", id, "email", email)
	return Redeemed{Tenant: id, Email: email}, nil
}

// Remove deletes every invitation of tenant id, sent or not, used or not,
// so that no link of the tenant works any more: the compensation of Send,
// and part of deprovisioning. It waits for a Send of the tenant that is
// sending at that moment. Removing a tenant with no invitations is not an
// error.
func (iv *Inviter) Remove(ctx context.Context, id tenant.ID) error {
	if id.IsZero() {
		return fmt.Errorf("invite: remove: %w: the tenant ID is zero", ErrInvalidArgument)
	}
	var n int64
	err := iv.cfg.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM tenancy.invitations WHERE tenant_id = $1`, id.String())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("invite: remove tenant %s: %w", id, notInstalled(err))
	}
	iv.cfg.log.InfoContext(ctx, "invite: invitations removed", "tenant_id", id, "count", n)
	return nil
}

// Remains lists what is left of tenant id's invitations, one line each
// ("invitation to admin@example.com (sent)"), for the check that
// deprovisioning left nothing behind: empty after [Inviter.Remove].
func (iv *Inviter) Remains(ctx context.Context, id tenant.ID) ([]string, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("invite: remains: %w: the tenant ID is zero", ErrInvalidArgument)
	}
	var out []string
	err := iv.cfg.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT email, state, used_at IS NOT NULL FROM tenancy.invitations WHERE tenant_id = $1 ORDER BY email_key`, id.String())
		if err != nil {
			return err
		}
		out = out[:0]
		for rows.Next() {
			var email, state string
			var used bool
			if err := rows.Scan(&email, &state, &used); err != nil {
				return err
			}
			if used {
				state += ", used"
			}
			out = append(out, "invitation to "+email+" ("+state+")")
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("invite: remains of tenant %s: %w", id, notInstalled(err))
	}
	return out, nil
}

// newToken returns a fresh token's text and the SHA-256 of its random
// bytes, which is all that is stored.
func newToken() (token string, hash [sha256.Size]byte, err error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", hash, fmt.Errorf("drawing a token: %w", err)
	}
	return tokenEncoding.EncodeToString(b[:]), sha256.Sum256(b[:]), nil
}

// parseToken returns the random bytes of a token in its one spelling.
func parseToken(s string) ([]byte, bool) {
	if len(s) != tokenLen {
		return nil, false
	}
	b, err := tokenEncoding.DecodeString(s)
	if err != nil || len(b) != tokenBytes {
		return nil, false
	}
	return b, true
}

// newMessageID returns a Message-ID, random, on the sender's domain: one
// for each mail, and one for each invitation's thread.
func newMessageID(domain string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("drawing a Message-ID: %w", err)
	}
	return "<invite." + hex.EncodeToString(b[:]) + "@" + domain + ">", nil
}
