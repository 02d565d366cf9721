package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The exit statuses of tenantctl.
const (
	exitOK       = 0 // the command did what it was asked
	exitFailure  = 1 // the operation failed (a step, the database, the KMS, ...)
	exitUsage    = 2 // bad command line, flags or arguments, or a bad request
	exitConfig   = 3 // the configuration is missing, incomplete or wrong
	exitNotFound = 4 // no such tenant, run, archive or setting
	exitConflict = 5 // the ID is taken, a run is in progress, a stale version
)

const exitCodesHelp = `Exit status:
  0  success
  1  the operation failed (a step failed: the tenant is failed and compensated,
     or the run stays open and 'tenantctl resume ID' continues it)
  2  usage: bad command, flag, argument, tenant ID or provisioning request
  3  configuration error (file, environment, flags; unknown keys are errors)
  4  not found: unknown tenant, no open run, no such archive or setting
  5  conflict: the ID is or was taken, a run is in progress, a step refuses
     the request as it stands (a host taken or reserved, objects under the
     prefix), a stale version, a state change the lifecycle forbids`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// usageError is an error of the command line: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// reported is an error whose details were printed already; main prints
// nothing more, and takes the exit status from the error it wraps.
type reported struct{ error }

func (r reported) Unwrap() error { return r.error }

// exitCode maps an error to tenantctl's exit status.
func exitCode(err error) int {
	var ue *usageError
	var ce *configError
	var re *lifecycle.RunError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &re), errors.Is(err, lifecycle.ErrInterrupted), errors.Is(err, lifecycle.ErrResidue):
		return exitFailure
	case errors.As(err, &ue), errors.Is(err, lifecycle.ErrInvalidRequest), errors.Is(err, tenant.ErrInvalidID),
		errors.Is(err, settings.ErrInvalid), errors.Is(err, keys.ErrInvalidArgument):
		return exitUsage
	case errors.As(err, &ce), errors.Is(err, lifecycle.ErrInvalidConfig), errors.Is(err, store.ErrMigrationChanged),
		errors.Is(err, store.ErrUnsafeAppRole), errors.Is(err, store.ErrUnsafeBackupRole):
		return exitConfig
	case errors.Is(err, lifecycle.ErrUnknownTenant), errors.Is(err, lifecycle.ErrNoRun), errors.Is(err, settings.ErrNotFound),
		errors.Is(err, keys.ErrNoKeys), errors.Is(err, errNotFound):
		return exitNotFound
	case errors.Is(err, lifecycle.ErrTenantExists), errors.Is(err, lifecycle.ErrRunInProgress),
		errors.Is(err, lifecycle.ErrRunBusy), errors.Is(err, lifecycle.ErrRefused),
		errors.Is(err, tenant.ErrIllegalTransition), errors.Is(err, settings.ErrConflict), errors.Is(err, errConflict):
		return exitConflict
	}
	return exitFailure
}

var (
	errNotFound = errors.New("not found")
	errConflict = errors.New("conflict")
)

// app is one invocation of tenantctl.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	configPath string
	format     string
	logLevel   string
	flags      flagValues

	extraKEKs []string // master keys a command needs served besides master_key

	cfg      *Config
	cfgPath  string
	logger   *slog.Logger
	prepared bool
}

// run runs tenantctl with args and returns its exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if !a.prepared && code == exitFailure {
		code = exitUsage // cobra's own errors: unknown command, bad flag
	}
	var rep reported
	if !errors.As(err, &rep) {
		fmt.Fprintf(stderr, "tenantctl: %s\n", strings.TrimPrefix(err.Error(), "tenantctl: "))
		if code == exitUsage && !a.prepared {
			fmt.Fprintln(stderr, "Run 'tenantctl --help' for usage.")
		}
	}
	return code
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "tenantctl",
		Short: "Operate the tenants of an RTMX deployment",
		Long: `tenantctl provisions, suspends, migrates, audits and deprovisions the tenants
of an RTMX deployment (REQ-DEPLOY-004), over package lifecycle.

Configuration comes from flags, then the environment (TENANTCTL_<KEY>, nested
keys joined by _, e.g. TENANTCTL_BACKUP_BUCKET), then a YAML file (--config,
TENANTCTL_CONFIG, else ./tenantctl.yaml, else $XDG_CONFIG_HOME/tenantctl/config.yaml).
The login secret comes only from a file (login_secret_file) or TENANTCTL_LOGIN_SECRET.

A new user on a machine with a local PostgreSQL superuser starts with
  tenantctl init --dev
  tenantctl provision -f examples/tenant.yaml
  tenantctl show abc123
  tenantctl deprovision abc123

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.prepare(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "configuration file (env TENANTCTL_CONFIG)")
	pf.StringVar(&a.format, "output", "table", "output format: table or json")
	pf.StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn or error (logs go to stderr)")
	a.flags = addConfigFlags(pf)
	root.AddCommand(a.provisionCommand(), a.resumeCommand(), a.suspendCommand(), a.reactivateCommand(),
		a.deprovisionCommand(), a.restoreCommand(), a.listCommand(), a.showCommand(), a.migrateCommand(),
		a.keysCommand(), a.auditCommand(), a.configCommand(), a.initCommand())
	return root
}

// prepare checks the global flags, sets up logging and loads the
// configuration.
func (a *app) prepare(cmd *cobra.Command) error {
	if a.format != "table" && a.format != "json" {
		return usagef("--output: %q is not table or json", a.format)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usagef("--log-level: %q is not debug, info, warn or error", a.logLevel)
	}
	a.logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	a.prepared = true
	if cmd.Annotations["noconfig"] == "true" {
		return nil
	}
	cfg, path, err := loadConfig(a.configPath, a.getenv, cmd.Root().PersistentFlags(), a.flags)
	if err != nil {
		return err
	}
	a.cfg, a.cfgPath = cfg, path
	if path != "" {
		a.logger.Debug("configuration read", "file", path)
	}
	return nil
}

func (a *app) out() output { return output{w: a.stdout, format: a.format} }

// open opens the platform of the configuration.
func (a *app) open(ctx context.Context) (*platform, error) {
	return openPlatform(ctx, a.cfg, a.getenv, a.logger, a.extraKEKs...)
}

// parseID parses a tenant ID argument: a bad one is a usage error.
func parseID(what, s string) (tenant.ID, error) {
	id, err := tenant.ParseID(s)
	if err != nil {
		return tenant.ID{}, &usageError{fmt.Errorf("%s: %w", what, err)}
	}
	return id, nil
}

// args checks the number of positional arguments.
func args(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			if n == 0 {
				return usagef("%s takes no arguments", cmd.CommandPath())
			}
			return usagef("usage: %s %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

// reportRunError prints a run's failure and what to do about it.
func (a *app) reportRunError(err error, id tenant.ID) error {
	var re *lifecycle.RunError
	if errors.As(err, &re) {
		what := map[lifecycle.Op]string{lifecycle.OpProvision: "provisioning", lifecycle.OpCompensate: "compensation of the provisioning",
			lifecycle.OpDeprovision: "deprovisioning"}[re.Op]
		if what == "" {
			what = string(re.Op)
		}
		fmt.Fprintf(a.stderr, "tenantctl: %s of tenant %s (run %d) failed at step %q:\n  %s\n", what, re.Tenant, re.Run, re.Step, oneLine(fmt.Sprint(re.Err)))
		switch {
		case re.Op != lifecycle.OpDeprovision && re.Compensated:
			fmt.Fprintf(a.stderr, "the tenant is failed and compensated: everything the run had made was removed; its ID stays taken.\n")
		case re.Op != lifecycle.OpDeprovision:
			fmt.Fprintf(a.stderr, "compensation did not finish: %s\nthe run stays open: 'tenantctl resume %s' continues it.\n", oneLine(fmt.Sprint(re.CompensationErr)), re.Tenant)
		default:
			fmt.Fprintf(a.stderr, "the run stays open: fix the cause, then 'tenantctl resume %s' continues it.\n", re.Tenant)
		}
		return reported{err}
	}
	if errors.Is(err, lifecycle.ErrInterrupted) {
		fmt.Fprintf(a.stderr, "tenantctl: %s\nthe run was interrupted and stays open: 'tenantctl resume %s' continues it.\n", err, id)
		return reported{err}
	}
	return err
}
