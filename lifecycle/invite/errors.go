package invite

import (
	"errors"
	"fmt"
)

// The sentinel errors carry no package prefix: the errors the package
// returns wrap them behind one "invite: " prefix (errors.Is matches them).

var (
	// ErrInvalidConfig is wrapped by the error of [New] for a [Config] it
	// cannot use; the message names the field and the rule.
	ErrInvalidConfig = errors.New("invalid configuration")

	// ErrInvalidArgument is wrapped by the error of [Inviter.Send] for an
	// address or tenant it refuses (a header injection attempt, a display
	// name, two addresses, an over-long address or name, ...); the message
	// names the argument and the rule. Nothing is stored or sent.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrNotInvitable is wrapped by the error of [Inviter.Send] for a
	// tenant that is not in the directory (store.ErrUnknownTenant is
	// wrapped too) or not in state provisioning or active.
	ErrNotInvitable = errors.New("tenant cannot be invited to")

	// ErrSend is wrapped by the error of [Inviter.Send] when the mail could
	// not be handed to the SMTP server (unreachable, refusing the sender
	// or the recipient, a timeout, a TLS failure); the cause is wrapped
	// too (a *textproto.Error for a refusal, with its code). The invitation
	// stays in state sending with no valid token: calling Send again
	// issues a fresh token and sends.
	ErrSend = errors.New("sending the invitation failed")

	// ErrInvalidToken is returned (wrapped) by [Inviter.Redeem] for every
	// token that does not redeem: malformed, unknown, already used,
	// expired, replaced by a newer one, or of a tenant that is gone or not
	// active. It is one error on purpose, so that the answer tells a
	// caller nothing about which; the log says.
	ErrInvalidToken = errors.New("invalid or expired invitation token")

	// ErrMalformedToken is wrapped, together with ErrInvalidToken, by the
	// error of [Inviter.Redeem] for a token that is not of the form
	// invitations have (43 characters of unpadded base64url). The form is
	// public, so saying so reveals nothing; the [Inviter.Handler] answers
	// 400 for it rather than 410.
	ErrMalformedToken = fmt.Errorf("%w: malformed", ErrInvalidToken)

	// ErrNotInstalled is wrapped by errors when the control-plane table
	// tenancy.invitations does not exist: run [Install].
	ErrNotInstalled = errors.New("not installed")
)
