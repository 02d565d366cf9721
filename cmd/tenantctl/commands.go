package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/spf13/cobra"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func (a *app) provisionCommand() *cobra.Command {
	var file string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "provision -f tenant.yaml",
		Short: "Provision a tenant from a REQ-DEPLOY-004 request (-f - reads stdin)",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("provision: -f FILE is required (- for standard input)")
			}
			req, err := a.readRequest(file)
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			if dryRun {
				plan, err := p.lc.Plan(cmd.Context(), req)
				if err != nil {
					return err
				}
				return printPlan(a.out(), req.ID, lifecycle.OpProvision, plan)
			}
			run, err := p.lc.Provision(cmd.Context(), req)
			if run != nil && err == nil {
				return printRun(a.out(), run)
			}
			return a.reportRunError(err, req.ID)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the request (YAML); - for standard input")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	return cmd
}

// readRequest reads and parses a provisioning request, printing every
// problem of a bad one with its path and line.
func (a *app) readRequest(file string) (*lifecycle.Request, error) {
	var r io.Reader = a.stdin
	name := "standard input"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("provision: %w", err)
		}
		defer f.Close()
		r, name = f, file
	}
	req, err := lifecycle.ParseRequest(r)
	var re *lifecycle.RequestError
	if errors.As(err, &re) {
		fmt.Fprintf(a.stderr, "tenantctl: %s: invalid provisioning request, %d problem(s):\n", name, len(re.Problems))
		for _, p := range re.Problems {
			fmt.Fprintf(a.stderr, "  %s\n", p)
		}
		return nil, reported{err}
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return req, nil
}

func (a *app) resumeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resume ID",
		Short: "Continue the tenant's open run (after a crash, an interruption or a failure)",
		Args:  args(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("tenant ID", args[0])
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			run, err := p.lc.Resume(cmd.Context(), id)
			if err == nil {
				return printRun(a.out(), run)
			}
			return a.reportRunError(err, id)
		},
	}
}

func (a *app) stateCommand(use, short string, do func(*platform, context.Context, tenant.ID) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Args:  args(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("tenant ID", args[0])
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			if err := do(p, cmd.Context(), id); err != nil {
				return err
			}
			info, err := p.admin.Tenant(cmd.Context(), id)
			if err != nil {
				return err
			}
			s := stateJSON{Tenant: id.String(), State: string(info.State)}
			return a.out().print(s, func() [][]string { return [][]string{{"ID", "STATE"}, {s.Tenant, s.State}} })
		},
	}
}

func (a *app) suspendCommand() *cobra.Command {
	return a.stateCommand("suspend", "Suspend an active tenant (its logins stop, its sessions end)",
		func(p *platform, ctx context.Context, id tenant.ID) error { return p.lc.Suspend(ctx, id) })
}

func (a *app) reactivateCommand() *cobra.Command {
	return a.stateCommand("reactivate", "Make a suspended tenant active again",
		func(p *platform, ctx context.Context, id tenant.ID) error { return p.lc.Reactivate(ctx, id) })
}

func (a *app) deprovisionCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "deprovision ID",
		Short: "Suspend, back up, delete and crypto-shred a tenant, verify nothing remains",
		Args:  args(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("tenant ID", args[0])
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			if dryRun {
				plan, err := p.lc.PlanDeprovision(cmd.Context(), id)
				if err != nil {
					return err
				}
				return printPlan(a.out(), id, lifecycle.OpDeprovision, plan)
			}
			run, err := p.lc.Deprovision(cmd.Context(), id)
			if err == nil {
				return printRun(a.out(), run)
			}
			return a.reportRunError(err, id)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	return cmd
}

func (a *app) restoreCommand() *cobra.Command {
	var archive, into string
	cmd := &cobra.Command{
		Use:   "restore --archive KEY --into ID",
		Short: "Restore a backup archive into a fresh, provisioned tenant",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if archive == "" || into == "" {
				return usagef("restore: --archive and --into are required")
			}
			id, err := parseID("--into", into)
			if err != nil {
				return err
			}
			if !archiveKeyPattern.MatchString(archive) {
				return usagef("--archive %q: not the key of a backup archive (backups/<tenant>/<name>, as 'tenantctl show' prints it)", archive)
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			if _, err := p.admin.Tenant(cmd.Context(), id); err != nil {
				return err
			}
			res, err := p.lc.Restore(cmd.Context(), archive, id, lifecycle.RestoreTarget{DB: p.db, Objects: p.objects})
			if gcerrors.Code(err) == gcerrors.NotFound {
				return fmt.Errorf("archive %q: %w: %w", archive, errNotFound, err)
			}
			if err != nil {
				return err
			}
			type restoreJSON struct {
				Tenant  string           `json:"tenant"`
				Archive string           `json:"archive"`
				From    string           `json:"from"`
				Rows    map[string]int64 `json:"rows"`
				Objects int              `json:"objects"`
				Skipped []string         `json:"skipped"`
			}
			j := restoreJSON{Tenant: id.String(), Archive: archive, From: res.Manifest.Tenant, Rows: res.Rows, Objects: res.Objects, Skipped: res.Skipped}
			return a.out().print(j, func() [][]string {
				rows := [][]string{{"TABLE", "ROWS"}}
				for t, n := range j.Rows {
					rows = append(rows, []string{t, fmt.Sprint(n)})
				}
				rows = append(rows, []string{"(objects)", fmt.Sprint(j.Objects)})
				return rows
			})
		},
	}
	cmd.Flags().StringVar(&archive, "archive", "", "the archive's key in the backup bucket (backups/<id>/...)")
	cmd.Flags().StringVar(&into, "into", "", "the tenant to restore into")
	return cmd
}

// archiveKeyPattern matches the keys lifecycle writes archives under.
var archiveKeyPattern = regexp.MustCompile(`^backups/[a-z][a-z0-9_]*/[A-Za-z0-9._-]+$`)

func (a *app) listCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the tenant directory (deleted tenants too)",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			all := []tenantJSON{}
			var after tenant.ID
			for {
				page, err := p.admin.ListTenants(cmd.Context(), after, 0)
				if err != nil {
					return err
				}
				for _, t := range page {
					all = append(all, tenantOf(t))
				}
				if len(page) == 0 || len(page) < 100 {
					break
				}
				after = page[len(page)-1].ID
			}
			return a.out().print(all, func() [][]string { return tenantRows(all) })
		},
	}
}

func (a *app) showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a tenant: its directory entry, routes and runs with their steps",
		Args:  args(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("tenant ID", args[0])
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			runs, err := p.lc.Runs(cmd.Context(), id)
			if err != nil {
				return err
			}
			var entry *tenantJSON
			info, err := p.admin.Tenant(cmd.Context(), id)
			switch {
			case err == nil:
				t := tenantOf(info)
				entry = &t
			case errors.Is(err, lifecycle.ErrUnknownTenant) && len(runs) > 0:
				// A provisioning run journaled before its placement step
				// put the tenant into the directory.
			default:
				return err
			}
			routes, err := lifecycle.Routes(cmd.Context(), p.admin, id)
			if err != nil {
				return err
			}
			s := showJSON{Tenant: entry, Routes: routes, Runs: []runJSON{}}
			if s.Routes == nil {
				s.Routes = []string{}
			}
			for _, r := range runs {
				s.Runs = append(s.Runs, runOf(r))
			}
			if a.format == "json" {
				return a.out().json(s)
			}
			o := a.out()
			if s.Tenant == nil {
				fmt.Fprintf(a.stdout, "ID:     %s\nState:  not in the directory yet (its provisioning run is open: 'tenantctl resume %s' continues it)\n", id, id)
			} else if err := o.table([][]string{
				{"ID:", s.Tenant.ID}, {"Name:", s.Tenant.Name}, {"Tier:", s.Tenant.Tier}, {"Region:", s.Tenant.Region},
				{"State:", s.Tenant.State}, {"Created:", fmtTime(s.Tenant.CreatedAt)}, {"Updated:", fmtTime(s.Tenant.UpdatedAt)},
			}); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "\nRoutes:")
			if len(s.Routes) == 0 {
				fmt.Fprintln(a.stdout, "  (none)")
			}
			for _, r := range s.Routes {
				fmt.Fprintf(a.stdout, "  %s\n", r)
			}
			for _, r := range s.Runs {
				fmt.Fprintf(a.stdout, "\nRun %d: %s, %s, started %s", r.ID, r.Op, r.State, fmtTime(r.StartedAt))
				if r.FinishedAt != nil {
					fmt.Fprintf(a.stdout, ", finished %s", fmtTime(*r.FinishedAt))
				}
				fmt.Fprintln(a.stdout)
				if r.Reason != "" {
					fmt.Fprintf(a.stdout, "  reason: %s\n", oneLine(r.Reason))
				}
				if k := archiveKey(r); k != "" {
					fmt.Fprintf(a.stdout, "  backup archive: %s\n", k)
				}
				if err := o.table(runRows(r)); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *app) migrateCommand() *cobra.Command {
	var opts store.MigrateOptions
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the pending tenant migrations to every tenant, with a progress bar",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			bar := newProgress(a.stdout, a.stderr, noProgress)
			opts.Progress = bar.update
			rep, err := p.admin.Migrate(cmd.Context(), opts)
			bar.finish()
			if rep != nil {
				if perr := printMigrate(a.out(), rep); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	cmd.Flags().IntVar(&opts.Parallelism, "parallelism", 4, "tenants migrated at once")
	cmd.Flags().IntVar(&opts.Canary, "canary", 0, "tenants migrated first; a failure among them stops the run")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bar")
	return cmd
}

func printMigrate(o output, rep *store.MigrateReport) error {
	type failure struct {
		Tenant string `json:"tenant"`
		Error  string `json:"error"`
	}
	type migrateJSON struct {
		Total    int       `json:"total"`
		Migrated []string  `json:"migrated"`
		Failed   []failure `json:"failed"`
		Pending  []string  `json:"pending"`
		Stopped  string    `json:"stopped,omitempty"`
	}
	ids := func(l []tenant.ID) []string {
		out := []string{}
		for _, id := range l {
			out = append(out, id.String())
		}
		return out
	}
	j := migrateJSON{Total: rep.Total, Migrated: ids(rep.Migrated), Failed: []failure{}, Pending: ids(rep.Pending)}
	for _, f := range rep.Failed {
		j.Failed = append(j.Failed, failure{Tenant: f.Tenant.String(), Error: fmt.Sprint(f.Err)})
	}
	if rep.Stopped != nil {
		j.Stopped = rep.Stopped.Error()
	}
	return o.print(j, func() [][]string {
		rows := [][]string{{"TENANT", "RESULT"}}
		for _, id := range j.Migrated {
			rows = append(rows, []string{id, "migrated"})
		}
		for _, f := range j.Failed {
			rows = append(rows, []string{f.Tenant, "failed: " + oneLine(f.Error)})
		}
		for _, id := range j.Pending {
			rows = append(rows, []string{id, "pending"})
		}
		rows = append(rows, []string{fmt.Sprintf("(%d behind)", j.Total), fmt.Sprintf("%d migrated, %d failed, %d pending", len(j.Migrated), len(j.Failed), len(j.Pending))})
		return rows
	})
}
