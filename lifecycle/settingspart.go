package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/rtmx-ai/tenancy/lifecycle/settings"
)

// SettingsPart is the BackupPart of the tenant's configuration
// (lifecycle/settings): every section's history, with its secrets opened
// (the archive is encrypted to the backup key), read in the backup's
// snapshot; Restore imports it into the fresh tenant, sealing the secrets
// again under that tenant's key. Without it a restored tenant's
// integration secrets would be ciphertext under the shredded key.
type SettingsPart struct {
	// Settings opens the secrets (its keys.Manager) and imports them.
	Settings *settings.Settings
}

// Name returns "settings.json".
func (p *SettingsPart) Name() string { return "settings.json" }

// Tables returns the settings table, which the part restores itself.
func (p *SettingsPart) Tables() []string { return []string{settings.Table} }

// Export writes the tenant's settings records as JSON.
func (p *SettingsPart) Export(ctx context.Context, t *Target, src BackupSource, w io.Writer) error {
	recs, err := p.Settings.ExportFrom(t.Context(ctx), src, src.Table(settings.Table))
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(exportedSettings{Records: recs})
}

// Fresh reports an error if the tenant has settings already.
func (p *SettingsPart) Fresh(ctx context.Context, t *Target) error {
	recs, err := p.Settings.Export(t.Context(ctx))
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		return fmt.Errorf("the tenant has settings already (%d revisions): restore into a fresh tenant", len(recs))
	}
	return nil
}

// Import reads the records and imports them into the tenant.
func (p *SettingsPart) Import(ctx context.Context, t *Target, r io.Reader) error {
	var in exportedSettings
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("%w: settings.json: %v", ErrBackupCorrupt, err)
	}
	if len(in.Records) == 0 {
		return nil
	}
	return p.Settings.Import(t.Context(ctx), in.Records)
}

type exportedSettings struct {
	Records []settings.Record `json:"records"`
}
