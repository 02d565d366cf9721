package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Rotate a tenant's keys, re-wrap keysets onto another master key", Args: args(0, "")}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return usagef("keys: name a subcommand: rotate or rewrap") }
	var purpose string
	rotate := &cobra.Command{
		Use:   "rotate ID",
		Short: "Add a new primary key to the tenant's keysets (all three, or --purpose)",
		Args:  args(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("tenant ID", args[0])
			if err != nil {
				return err
			}
			purposes := keys.Purposes()
			if purpose != "" {
				p, err := keys.ParsePurpose(purpose)
				if err != nil {
					return usagef("--purpose: %q is not data, blob or audit", purpose)
				}
				purposes = []keys.Purpose{p}
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			if _, err := p.admin.Tenant(cmd.Context(), id); err != nil {
				return err
			}
			done := []string{}
			for _, pu := range purposes {
				if err := p.prov.Rotate(cmd.Context(), id, pu); err != nil {
					return fmt.Errorf("rotate the %s keyset of %s: %w", pu, id, err)
				}
				done = append(done, pu.String())
			}
			if err := a.auditPlatform(cmd.Context(), p, "tenant.keys.rotate", "tenant/"+id.String(), map[string]any{"purposes": done}); err != nil {
				return err
			}
			type rotateJSON struct {
				Tenant  string   `json:"tenant"`
				Rotated []string `json:"rotated"`
			}
			j := rotateJSON{Tenant: id.String(), Rotated: done}
			return a.out().print(j, func() [][]string {
				rows := [][]string{{"TENANT", "KEYSET", "RESULT"}}
				for _, d := range done {
					rows = append(rows, []string{j.Tenant, d, "rotated"})
				}
				return rows
			})
		},
	}
	rotate.Flags().StringVar(&purpose, "purpose", "", "data, blob or audit (default: all three)")
	var from, to string
	rewrap := &cobra.Command{
		Use:   "rewrap --from URI --to URI",
		Short: "Re-wrap every keyset from one master key to another (resumable)",
		Args:  args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usagef("keys rewrap: --from and --to are required")
			}
			if from == to {
				return usagef("keys rewrap: --from and --to name the same key")
			}
			for _, u := range []string{from, to} {
				if !strings.HasPrefix(u, localkms.Scheme) && !strings.HasPrefix(u, "pkcs11:") && !strings.HasPrefix(u, "aws-kms://") {
					return usagef("keys rewrap: %s: not a local://, pkcs11: or aws-kms:// key URI", keys.URI(u))
				}
			}
			a.extraKEKs = []string{from, to}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			res, err := p.prov.Rewrap(cmd.Context(), keys.URI(from), keys.URI(to))
			if aerr := a.auditPlatform(cmd.Context(), p, "platform.keys.rewrap", "keysets",
				map[string]any{"from": keys.URI(from).String(), "to": keys.URI(to).String(), "rewrapped": res.Rewrapped, "failed": res.Failed}); aerr != nil && err == nil {
				err = aerr
			}
			type rewrapJSON struct {
				Rewrapped int `json:"rewrapped"`
				Failed    int `json:"failed"`
			}
			j := rewrapJSON{res.Rewrapped, res.Failed}
			if perr := a.out().print(j, func() [][]string {
				return [][]string{{"REWRAPPED", "FAILED"}, {fmt.Sprint(j.Rewrapped), fmt.Sprint(j.Failed)}}
			}); perr != nil && err == nil {
				err = perr
			}
			if err == nil && keys.URI(from) == keys.URI(a.cfg.MasterKey) {
				fmt.Fprintf(a.stderr, "tenantctl: set master_key to the new key now, and keep the old one until backups taken under it have expired.\n")
			}
			return err
		},
	}
	rewrap.Flags().StringVar(&from, "from", "", "URI of the master key the keysets are wrapped by now")
	rewrap.Flags().StringVar(&to, "to", "", "URI of the master key to wrap them by")
	cmd.AddCommand(rotate, rewrap)
	return cmd
}

// auditPlatform records an operation in the platform's audit trail.
func (a *app) auditPlatform(ctx context.Context, p *platform, action, resource string, details any) error {
	_, err := p.audit.Append(ctx, audit.Event{Actor: a.cfg.actor(), Action: action, Resource: resource, Outcome: audit.OutcomeSuccess, Details: details})
	if err != nil {
		return fmt.Errorf("record %s in the platform audit trail: %w", action, err)
	}
	return nil
}

func (a *app) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify and export audit logs (a tenant's, or the platform's)", Args: args(0, "")}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return usagef("audit: name a subcommand: verify or export")
	}
	var platformLog bool
	target := func(args []string) (tenant.ID, error) {
		switch {
		case platformLog && len(args) == 0:
			return tenant.ID{}, nil
		case !platformLog && len(args) == 1:
			return parseID("tenant ID", args[0])
		}
		return tenant.ID{}, usagef("audit: name a tenant ID or --platform (one of them)")
	}
	verify := &cobra.Command{
		Use:   "verify [ID | --platform]",
		Short: "Recompute an audit chain and check its checkpoints",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := target(args)
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			var rep audit.Report
			if platformLog {
				rep, err = p.audit.Verify(cmd.Context())
			} else {
				if _, err := p.admin.Tenant(cmd.Context(), id); err != nil {
					return err
				}
				log, lerr := a.tenantLog(p)
				if lerr != nil {
					return lerr
				}
				defer log.Close(context.WithoutCancel(cmd.Context()))
				rep, err = log.Verify(tenant.NewContext(cmd.Context(), id))
			}
			if err != nil {
				return err
			}
			type verifyJSON struct {
				Log            string `json:"log"`
				Verified       bool   `json:"verified"`
				Entries        int64  `json:"entries"`
				HeadSeq        int64  `json:"head_seq"`
				Checkpoints    int    `json:"checkpoints"`
				LastCheckpoint int64  `json:"last_checkpoint"`
			}
			j := verifyJSON{rep.Log, true, rep.Entries, rep.HeadSeq, rep.Checkpoints, rep.LastCheckpoint}
			return a.out().print(j, func() [][]string {
				return [][]string{{"LOG", "RESULT", "ENTRIES", "HEAD", "CHECKPOINTS"},
					{j.Log, "verified", fmt.Sprint(j.Entries), fmt.Sprint(j.HeadSeq), fmt.Sprint(j.Checkpoints)}}
			})
		},
	}
	verify.Flags().BoolVar(&platformLog, "platform", false, "the platform's own trail")
	var outFile string
	export := &cobra.Command{
		Use:   "export [ID | --platform] [-o FILE]",
		Short: "Export an audit log as JSON Lines, verifiable offline",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := target(args)
			if err != nil {
				return err
			}
			p, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer p.Close()
			w := a.stdout
			var f *os.File
			if outFile != "" && outFile != "-" {
				if f, err = os.OpenFile(outFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
					return usagef("audit export: %w", err)
				}
				w = f
			}
			var n int64
			if platformLog {
				n, err = p.audit.Export(cmd.Context(), w)
			} else if _, err = p.admin.Tenant(cmd.Context(), id); err == nil {
				log, lerr := a.tenantLog(p)
				if lerr != nil {
					return lerr
				}
				defer log.Close(context.WithoutCancel(cmd.Context()))
				n, err = log.Export(tenant.NewContext(cmd.Context(), id), w)
			}
			if f != nil {
				if cerr := f.Close(); cerr != nil && err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(outFile)
				} else {
					fmt.Fprintf(a.stderr, "tenantctl: %d entries exported to %s\n", n, outFile)
				}
			}
			return err
		},
	}
	export.Flags().BoolVar(&platformLog, "platform", false, "the platform's own trail")
	export.Flags().StringVarP(&outFile, "out", "o", "", "write to FILE (created, never overwritten) instead of standard output")
	cmd.AddCommand(verify, export)
	return cmd
}

// tenantLog opens the tenants' audit logs, read through the platform DB.
func (a *app) tenantLog(p *platform) (*audit.Log, error) {
	cfg := audit.DefaultConfig()
	cfg.DB, cfg.Keys = p.db, p.serving
	return audit.New(cfg)
}
