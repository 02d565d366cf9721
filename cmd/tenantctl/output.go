package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The JSON documents tenantctl prints with --output json. Their fields
// are stable: new fields may be added, none renamed or removed.

// tenantJSON is a directory entry.
type tenantJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Tier      string    `json:"tier"`
	Region    string    `json:"region"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func tenantOf(i tenant.Info) tenantJSON {
	return tenantJSON{ID: i.ID.String(), Name: i.Name, Tier: string(i.Tier), Region: i.Region, State: string(i.State),
		CreatedAt: i.CreatedAt.UTC(), UpdatedAt: i.UpdatedAt.UTC()}
}

// stepJSON is one journaled step of a run.
type stepJSON struct {
	Step       string          `json:"step"`
	Phase      string          `json:"phase"`
	Status     string          `json:"status"`
	Error      string          `json:"error,omitempty"`
	Detail     json.RawMessage `json:"detail,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// runJSON is a provisioning or deprovisioning run.
type runJSON struct {
	ID         int64      `json:"id"`
	Tenant     string     `json:"tenant"`
	Op         string     `json:"op"`
	State      string     `json:"state"`
	Reason     string     `json:"reason,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Steps      []stepJSON `json:"steps"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func runOf(r *lifecycle.Run) runJSON {
	out := runJSON{ID: r.ID, Tenant: r.Tenant.String(), Op: string(r.Op), State: string(r.State), Reason: r.Reason,
		StartedAt: r.StartedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), FinishedAt: timePtr(r.FinishedAt), Steps: []stepJSON{}}
	for _, s := range r.Steps {
		out.Steps = append(out.Steps, stepJSON{Step: s.Step, Phase: s.Phase, Status: string(s.Status), Error: s.Error,
			Detail: s.Detail, StartedAt: s.StartedAt.UTC(), FinishedAt: timePtr(s.FinishedAt)})
	}
	return out
}

// showJSON is `tenantctl show`.
type showJSON struct {
	// Tenant is null for a tenant whose provisioning run is open but
	// has not put it into the directory yet.
	Tenant *tenantJSON `json:"tenant"`
	Routes []string    `json:"routes"`
	Runs   []runJSON   `json:"runs"`
}

// planJSON is a --dry-run plan.
type planJSON struct {
	Tenant string         `json:"tenant"`
	Op     string         `json:"op"`
	DryRun bool           `json:"dry_run"`
	Steps  []planStepJSON `json:"steps"`
}

type planStepJSON struct {
	Step string `json:"step"`
	Does string `json:"does"`
}

// stateJSON is what suspend and reactivate print.
type stateJSON struct {
	Tenant string `json:"tenant"`
	State  string `json:"state"`
}

// output prints data in the chosen format.
type output struct {
	w      io.Writer
	format string // "table" or "json"
}

func (o output) json(v any) error {
	enc := json.NewEncoder(o.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows (the first is the header) aligned with tabwriter.
func (o output) table(rows [][]string) error {
	tw := tabwriter.NewWriter(o.w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func (o output) print(v any, rows func() [][]string) error {
	if o.format == "json" {
		return o.json(v)
	}
	return o.table(rows())
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func tenantRows(ts []tenantJSON) [][]string {
	rows := [][]string{{"ID", "NAME", "TIER", "REGION", "STATE", "CREATED"}}
	for _, t := range ts {
		rows = append(rows, []string{t.ID, t.Name, t.Tier, t.Region, t.State, fmtTime(t.CreatedAt)})
	}
	return rows
}

func runRows(r runJSON) [][]string {
	rows := [][]string{{"RUN", "OP", "STEP", "PHASE", "STATUS", "ERROR"}}
	for _, s := range r.Steps {
		rows = append(rows, []string{fmt.Sprint(r.ID), r.Op, s.Step, s.Phase, s.Status, oneLine(s.Error)})
	}
	return rows
}

// oneLine keeps a message on one line of a table.
func oneLine(s string) string {
	s = strings.NewReplacer("\n", " ", "\r", " ", "\t", " ").Replace(s)
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func printRun(o output, r *lifecycle.Run) error {
	j := runOf(r)
	if o.format == "json" {
		return o.json(j)
	}
	fmt.Fprintf(o.w, "run %d: %s of tenant %s: %s\n", j.ID, j.Op, j.Tenant, j.State)
	if j.Reason != "" {
		fmt.Fprintf(o.w, "reason: %s\n", oneLine(j.Reason))
	}
	if k := archiveKey(j); k != "" {
		fmt.Fprintf(o.w, "backup archive: %s\n", k)
	}
	return o.table(runRows(j))
}

// archiveKey returns the key of the backup a deprovisioning run wrote.
func archiveKey(r runJSON) string {
	for _, s := range r.Steps {
		if s.Step == "backup" && len(s.Detail) > 0 {
			var a struct {
				Key string `json:"key"`
			}
			if json.Unmarshal(s.Detail, &a) == nil {
				return a.Key
			}
		}
	}
	return ""
}

func printPlan(o output, id tenant.ID, op lifecycle.Op, steps []lifecycle.PlannedStep) error {
	p := planJSON{Tenant: id.String(), Op: string(op), DryRun: true, Steps: []planStepJSON{}}
	for _, s := range steps {
		p.Steps = append(p.Steps, planStepJSON{Step: s.Step, Does: s.Does})
	}
	if o.format == "json" {
		return o.json(p)
	}
	fmt.Fprintf(o.w, "dry run: %s of tenant %s would do (nothing was changed):\n", op, id)
	rows := [][]string{{"#", "STEP", "DOES"}}
	for i, s := range p.Steps {
		rows = append(rows, []string{fmt.Sprint(i + 1), s.Step, s.Does})
	}
	return o.table(rows)
}
