package invite_test

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"net/smtp"
	"os"
	"time"

	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The example needs a PostgreSQL and an SMTP relay, so it is compiled, not
// run; the tests run the same calls against real ones (mailpit).

// Provisioning sends the invitation; the platform's web server serves the
// link. Send is idempotent, so a resumed provisioning calls it again
// without a second mail.
func ExampleNew() {
	ctx := context.Background()
	cfg, err := store.ParseAdminConfig("postgres://rtmx_admin@db.internal:5432/rtmx?sslmode=verify-full")
	if err != nil {
		log.Fatal(err)
	}
	cfg.PlatformRole = "rtmx_platform"
	admin, err := store.OpenAdmin(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	if err := invite.Install(ctx, admin); err != nil {
		log.Fatal(err)
	}

	iv, err := invite.New(invite.Config{
		Admin: admin,
		SMTP: invite.SMTPConfig{
			Addr: "smtp.internal:587", // STARTTLS required (the default)
			Auth: smtp.PlainAuth("", "rtmx", os.Getenv("SMTP_PASSWORD"), "smtp.internal"),
		},
		From:     "RTMX <no-reply@rtmx.example>",
		LinkBase: "https://rtmx.example/invite",
		TTL:      72 * time.Hour,
		Logger:   slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}

	info, err := admin.Tenant(ctx, tenant.MustParseID("acme"))
	if err != nil {
		log.Fatal(err)
	}
	if err := iv.Send(ctx, info, "admin@acme.example"); err != nil {
		log.Fatal(err) // errors.Is(err, invite.ErrSend): try again later
	}

	http.Handle("/invite", iv.Handler())
	log.Fatal(http.ListenAndServe(":8080", nil))
}
