package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

// configCommand reads and writes per-tenant settings (lifecycle/settings),
// in the tenant's own placement.
func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Read and change a tenant's settings (versioned, per tenant)", Args: args(0, "")}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return usagef("config: name a subcommand: get or set") }
	parse := func(args []string) (tenant.ID, settings.Section, error) {
		id, err := parseID("tenant ID", args[0])
		if err != nil {
			return tenant.ID{}, "", err
		}
		sec, err := settings.ParseSection(args[1])
		if err != nil {
			return tenant.ID{}, "", usagef("section %q: one of %v", args[1], settings.Sections())
		}
		return id, sec, nil
	}
	open := func(cmd *cobra.Command, id tenant.ID) (*platform, error) {
		p, err := a.open(cmd.Context())
		if err != nil {
			return nil, err
		}
		if p.settings == nil {
			p.Close()
			return nil, configErrorf("per-tenant settings are off: set migrations.settings_version")
		}
		if _, err := p.admin.Tenant(cmd.Context(), id); err != nil {
			p.Close()
			return nil, err
		}
		return p, nil
	}
	type revisionJSON struct {
		Tenant  string          `json:"tenant"`
		Section string          `json:"section"`
		Version int64           `json:"version"`
		Actor   string          `json:"actor"`
		Time    time.Time       `json:"time"`
		Value   json.RawMessage `json:"value"`
	}
	var version int64
	get := &cobra.Command{
		Use:   "get ID SECTION",
		Short: "Print a section of a tenant's settings (secrets redacted)",
		Args:  args(2, "ID SECTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, sec, err := parse(args)
			if err != nil {
				return err
			}
			p, err := open(cmd, id)
			if err != nil {
				return err
			}
			defer p.Close()
			ctx := tenant.NewContext(cmd.Context(), id)
			var rev settings.Revision
			if version > 0 {
				rev, err = p.settings.At(ctx, sec, version)
			} else {
				rev, err = p.settings.Get(ctx, sec)
			}
			if err != nil {
				return err
			}
			val, err := json.Marshal(rev.Value)
			if err != nil {
				return err
			}
			j := revisionJSON{Tenant: id.String(), Section: string(rev.Section), Version: rev.Version, Actor: rev.Actor, Time: rev.Time.UTC(), Value: val}
			if a.format == "json" {
				return a.out().json(j)
			}
			fmt.Fprintf(a.stdout, "# tenant %s, section %s, version %d, by %s at %s\n", j.Tenant, j.Section, j.Version, j.Actor, fmtTime(j.Time))
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(rev.Value)
		},
	}
	get.Flags().Int64Var(&version, "version", 0, "an older version (default: the current one)")
	var file string
	var expect int64 = -1
	set := &cobra.Command{
		Use:   "set ID SECTION -f value.json",
		Short: "Store a new version of a section (-f - reads standard input)",
		Args:  args(2, "ID SECTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, sec, err := parse(args)
			if err != nil {
				return err
			}
			if file == "" {
				return usagef("config set: -f FILE is required (- for standard input)")
			}
			var r io.Reader = a.stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("config set: %w", err)
				}
				defer f.Close()
				r = f
			}
			data, err := io.ReadAll(io.LimitReader(r, settings.MaxValueBytes+1))
			if err != nil {
				return err
			}
			v, err := settings.ParseValue(sec, data)
			if err != nil {
				return a.reportSettingsError(err)
			}
			p, err := open(cmd, id)
			if err != nil {
				return err
			}
			defer p.Close()
			ctx := tenant.NewContext(cmd.Context(), id)
			if expect < 0 {
				cur, err := p.settings.Get(ctx, sec)
				switch {
				case errors.Is(err, settings.ErrNotFound):
					expect = 0
				case err != nil:
					return err
				default:
					expect = cur.Version
				}
			}
			n, err := p.settings.Put(ctx, v, expect, a.cfg.actor())
			if err != nil {
				return a.reportSettingsError(err)
			}
			type setJSON struct {
				Tenant  string `json:"tenant"`
				Section string `json:"section"`
				Version int64  `json:"version"`
			}
			j := setJSON{id.String(), string(sec), n}
			return a.out().print(j, func() [][]string {
				return [][]string{{"TENANT", "SECTION", "VERSION"}, {j.Tenant, j.Section, fmt.Sprint(j.Version)}}
			})
		},
	}
	set.Flags().StringVarP(&file, "file", "f", "", "the section's value as JSON; - for standard input")
	set.Flags().Int64Var(&expect, "expect-version", -1, "fail unless the section is at this version (default: the current one)")
	cmd.AddCommand(get, set)
	return cmd
}

// reportSettingsError prints every problem of a refused value.
func (a *app) reportSettingsError(err error) error {
	var se *settings.Error
	if !errors.As(err, &se) {
		return err
	}
	fmt.Fprintf(a.stderr, "tenantctl: invalid settings, %d problem(s):\n", len(se.Problems))
	for _, p := range se.Problems {
		fmt.Fprintf(a.stderr, "  %s\n", p)
	}
	return reported{err}
}
