package invite

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/store"
)

// ddl creates the invitations table in the control plane. A row is made in
// state 'sending' before any mail goes out; its token_hash is set only
// together with state 'sent', in the transaction that records the mail as
// handed over, so a row in 'sending' has no token that redeems. attempts
// counts the Send calls that found the row in 'sending' (failed, crashed,
// or concurrent ones). thread_id is drawn with the row; every mail of the
// invitation names it in References, and message_id is the Message-ID of
// the mail recorded as sent.
var ddl = []string{
	`CREATE TABLE IF NOT EXISTS tenancy.invitations (
  tenant_id  text NOT NULL,
  email_key  text NOT NULL,
  email      text NOT NULL,
  state      text NOT NULL CHECK (state IN ('sending', 'sent')),
  thread_id  text NOT NULL,
  message_id text,
  attempts   integer NOT NULL DEFAULT 0,
  token_hash bytea CHECK (octet_length(token_hash) = 32),
  created_at timestamptz NOT NULL,
  sent_at    timestamptz,
  expires_at timestamptz,
  used_at    timestamptz,
  PRIMARY KEY (tenant_id, email_key),
  CONSTRAINT invitations_token_hash_key UNIQUE (token_hash),
  CONSTRAINT invitations_sent_has_token CHECK ((state = 'sent') = (token_hash IS NOT NULL AND message_id IS NOT NULL AND sent_at IS NOT NULL AND expires_at IS NOT NULL)),
  CONSTRAINT invitations_used_was_sent CHECK (used_at IS NULL OR state = 'sent')
)`,
	`COMMENT ON TABLE tenancy.invitations IS 'tenancy/lifecycle/invite: admin invitations; token_hash is SHA-256 of the token, the token itself is stored nowhere'`,
	`REVOKE ALL ON tenancy.invitations FROM PUBLIC`,
}

// Install creates the control-plane table of invitations,
// tenancy.invitations, through admin (for the admin role only; the
// platform role gets nothing on it). It is idempotent: run it with
// provisioning, after store.OpenAdmin.
func Install(ctx context.Context, admin *store.Admin) error {
	if admin == nil {
		return fmt.Errorf("invite: install: %w: admin is nil", ErrInvalidConfig)
	}
	err := admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		// The control-plane lock of store, so that two Installs take turns.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, store.ControlPlaneLock); err != nil {
			return err
		}
		for _, s := range ddl {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("invite: install: %w", err)
	}
	return nil
}

// notInstalled maps PostgreSQL's "undefined table" to ErrNotInstalled;
// other errors pass.
func notInstalled(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return fmt.Errorf("%w: run invite.Install (%s)", ErrNotInstalled, pgErr.Message)
	}
	return err
}
