package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/tenant"
)

// sampleCSV is an RTMX database.csv of three requirements, for -check.
//
//go:embed sample/database.csv
var sampleCSV []byte

// roles are the roles the demo issues a token for, most privileged first.
var roles = []string{authz.RoleOwner, authz.RoleEditor, authz.RoleViewer}

// runConfig is what run does.
type runConfig struct {
	Options options
	// Addr is the listen address.
	Addr string
	// Check makes run call every kind of route once as a client, check
	// the answers, and stop, instead of serving until interrupted.
	Check bool
	// EnvFile, if set, is where run writes the export lines of the
	// tokens, removed when it stops.
	EnvFile string
	appConfig
}

// appConfig is how the service is set up over an environment.
type appConfig struct {
	// TokenTTL is how long the demo tokens are valid.
	TokenTTL time.Duration
	// MaxAttachment is the largest attachment, in bytes.
	MaxAttachment int64
	// Quota is every tenant's rate limit and requests in flight.
	Quota ratelimit.Quota
	// Logger receives the service's logs.
	Logger *slog.Logger
}

func defaultAppConfig() appConfig {
	return appConfig{
		TokenTTL:      12 * time.Hour,
		MaxAttachment: 10 << 20,
		Quota:         ratelimit.DefaultConfig().Tiers[tenant.TierStandard],
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

func main() {
	def := defaultAppConfig()
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	adminURL := flag.String("admin-url", os.Getenv("RTMXAPI_ADMIN_URL"), "connection string of a PostgreSQL superuser (default: found on 127.0.0.1:5432 or a local socket)")
	check := flag.Bool("check", false, "call every kind of route once, check the answers, clean up and exit")
	envFile := flag.String("env-file", filepath.Join(os.TempDir(), "rtmxapi.env"), "file to write the export lines of the tokens to (\"\": none)")
	flag.DurationVar(&def.TokenTTL, "token-ttl", def.TokenTTL, "validity of the demo tokens")
	flag.Int64Var(&def.MaxAttachment, "max-attachment", def.MaxAttachment, "largest attachment, in bytes")
	flag.Float64Var(&def.Quota.Rate, "rate", def.Quota.Rate, "requests per second per tenant")
	flag.IntVar(&def.Quota.Burst, "burst", def.Quota.Burst, "burst of requests per tenant")
	watch := flag.String("watch", "", "instead of serving: print the feed of changes at this URL (http://HOST/t/TENANT/ws), with -token")
	token := flag.String("token", "", "bearer token for -watch")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *watch != "" {
		if err := watchFeed(ctx, os.Stdout, *watch, *token); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "rtmxapi:", err)
			os.Exit(1)
		}
		return
	}
	if err := runMain(ctx, *adminURL, *addr, *check, *envFile, def); err != nil {
		fmt.Fprintln(os.Stderr, "rtmxapi:", err)
		os.Exit(1)
	}
}

// runMain finds PostgreSQL, takes the lock of a new run, cleans up what
// killed runs left, and runs with the names of the new run.
func runMain(ctx context.Context, adminURL, addr string, check bool, envFile string, ac appConfig) error {
	found, err := findPostgres(ctx, adminURL)
	if err != nil {
		return err
	}
	id := newRunID()
	unlock, err := lockRun(ctx, found, id)
	if err != nil {
		return err
	}
	defer unlock()
	dropped, err := cleanLeftovers(ctx, found, databasePrefix, runOptions)
	if err != nil {
		return err
	}
	for _, id := range dropped {
		fmt.Printf("dropped the leftovers of run %s, which is no longer running\n", id)
	}
	return run(ctx, os.Stdout, runConfig{Options: runOptions(found, id), Addr: addr, Check: check, EnvFile: envFile, appConfig: ac})
}

// app is the service over an environment, with the demo issuer of its
// tokens.
type app struct {
	env      *environment
	issuer   *issuer
	verifier *authz.Verifier
	hub      *ws.Hub
	svc      *service
	handler  http.Handler
}

func newApp(ctx context.Context, env *environment, ac appConfig) (a *app, err error) {
	a = &app{env: env}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.issuer, err = newIssuer(ac.TokenTTL); err != nil {
		return nil, err
	}
	if a.verifier, err = a.issuer.verifier(ctx); err != nil {
		return nil, err
	}
	lcfg := ratelimit.DefaultConfig()
	for _, t := range tenant.Tiers() {
		lcfg.Tiers[t] = ac.Quota
	}
	lcfg.Logger = ac.Logger
	dir := authz.StoreDirectory(env.db)
	lcfg.TierOf = func(ctx context.Context, id tenant.ID) (tenant.Tier, error) {
		info, err := dir.Tenant(ctx, id)
		return info.Tier, err
	}
	limiter, err := ratelimit.NewLocal(lcfg)
	if err != nil {
		return nil, err
	}
	inflight, err := ratelimit.NewConcurrency(lcfg)
	if err != nil {
		return nil, err
	}
	mcfg := authz.DefaultConfig()
	mcfg.Verifier, mcfg.Directory = a.verifier, dir
	mcfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	mcfg.Limiter, mcfg.Concurrency = limiter, authz.ConcurrencyOf(inflight)
	mcfg.Logger = ac.Logger
	mw, err := authz.NewMiddleware(mcfg)
	if err != nil {
		return nil, err
	}
	hcfg := ws.DefaultConfig()
	hcfg.Directory = dir
	hcfg.PublishPermission = "" // only the service publishes
	hcfg.Logger = ac.Logger
	if a.hub, err = ws.NewHub(hcfg); err != nil {
		return nil, err
	}
	a.svc, err = newService(serviceConfig{DB: env.db, Audit: env.audit, Buckets: env.buckets, Hub: a.hub, MW: mw, MaxAttachment: ac.MaxAttachment, Logger: ac.Logger})
	if err != nil {
		return nil, err
	}
	a.handler = a.svc.Handler()
	return a, nil
}

func (a *app) close() {
	if a.hub != nil {
		_ = a.hub.Close()
	}
	if a.verifier != nil {
		a.verifier.Close()
	}
}

// token returns a token of tenant id's member holding role.
func (a *app) token(id tenant.ID, role string) (string, error) {
	return a.issuer.token(id, role+"@"+id.String(), role)
}

// run sets the environment up, serves the service on cfg.Addr until ctx
// ends (or, with cfg.Check, runs the check), then drops everything it
// made.
func run(ctx context.Context, out io.Writer, cfg runConfig) (err error) {
	p := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	env, err := setup(ctx, cfg.Options, cfg.Logger)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := env.close(context.WithoutCancel(ctx)); cerr != nil {
			err = errors.Join(err, cerr)
			return
		}
		p("cleaned up: database %s, roles %s*, keys and objects dropped", cfg.Options.Database, cfg.Options.RolePrefix)
	}()
	a, err := newApp(ctx, env, cfg.appConfig)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		a.close()
		return fmt.Errorf("listen on %s (pass -addr): %w", cfg.Addr, err)
	}
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		a.close() // ends the feed's connections, which Shutdown does not wait for
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if serr := srv.Shutdown(sctx); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	base := "http://" + ln.Addr().String()

	exports, err := a.exports(base)
	if err != nil {
		return err
	}
	p("rtmxapi: serving on %s (database %s, roles %s*)", base, cfg.Options.Database, cfg.Options.RolePrefix)
	p("tenants: %s, each with its schema, login role, keys, audit log and objects", strings.Join(cfg.Options.Tenants, ", "))
	p("\ntokens (valid %s), for a shell:\n\n%s", cfg.TokenTTL, exports)
	if cfg.EnvFile != "" {
		if err := os.WriteFile(cfg.EnvFile, []byte(exports), 0o600); err != nil {
			return err
		}
		defer func() {
			if b, rerr := os.ReadFile(cfg.EnvFile); rerr == nil && string(b) == exports {
				_ = os.Remove(cfg.EnvFile)
			}
		}()
		p("(also in %s: . %s)", cfg.EnvFile, cfg.EnvFile)
	}
	first := cfg.Options.Tenants[0]
	up := strings.ToUpper(first)
	other := strings.ToUpper(cfg.Options.Tenants[len(cfg.Options.Tenants)-1])
	p(`
try (from the repository root):

  curl -s -H "Authorization: Bearer $%[2]s_VIEWER" $RTMX/t/%[1]s/requirements
  curl -s -H "Authorization: Bearer $%[2]s_EDITOR" -H 'Content-Type: application/json' \
    -d '{"req_id":"REQ-API-001","category":"API","requirement_text":"The API lists requirements","status":"MISSING"}' \
    $RTMX/t/%[1]s/requirements
  curl -s -H "Authorization: Bearer $%[2]s_EDITOR" -H 'Content-Type: text/csv' \
    --data-binary @.rtmx/database.csv $RTMX/t/%[1]s/import
  curl -s -T go.mod -H "Authorization: Bearer $%[2]s_EDITOR" -H 'Content-Type: text/plain' \
    $RTMX/t/%[1]s/requirements/REQ-API-001/attachments/go.mod
  curl -s -H "Authorization: Bearer $%[2]s_VIEWER" $RTMX/t/%[1]s/requirements/REQ-API-001/attachments/go.mod
  curl -s -H "Authorization: Bearer $%[2]s_OWNER" $RTMX/t/%[1]s/audit
  curl -s -H "Authorization: Bearer $%[3]s_EDITOR" $RTMX/t/%[1]s/requirements    # another tenant's token: 403
  go run ./examples/rtmxapi -watch $RTMX/t/%[1]s/ws -token $%[2]s_VIEWER        # the feed of changes
`, first, up, other)

	if cfg.Check {
		err = check(ctx, out, base, a)
	} else {
		p("stop with Ctrl-C (SIGINT) or SIGTERM: everything above is dropped")
		select {
		case <-ctx.Done():
		case err = <-served:
		}
	}
	return err
}

// exports returns the shell lines that set RTMX to base and a token per
// tenant and role, such as ACME_EDITOR.
func (a *app) exports(base string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "export RTMX=%s\n", base)
	for _, id := range a.env.tenants {
		for _, role := range roles {
			tok, err := a.token(id, role)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "export %s_%s=%s\n", strings.ToUpper(id.String()), strings.ToUpper(role), tok)
		}
	}
	return b.String(), nil
}
