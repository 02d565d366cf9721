package lifecycle

import (
	"context"
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

// Tables returns the settings table, which the part archives and
// restores itself.
func (p *SettingsPart) Tables() []string { return []string{settings.Table} }

// Export writes the tenant's settings records, secrets in the clear
// (settings.EncodeArchive), read in the backup's snapshot.
func (p *SettingsPart) Export(ctx context.Context, t *Target, src BackupSource, w io.Writer) error {
	recs, err := p.Settings.ExportFrom(t.Context(ctx), src, src.Schema())
	if err != nil {
		return err
	}
	return settings.EncodeArchive(w, recs)
}

// Fresh reports an error if the tenant has settings already.
func (p *SettingsPart) Fresh(ctx context.Context, t *Target) error {
	empty, err := p.Settings.Empty(t.Context(ctx))
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("the tenant has settings already: restore into a fresh tenant")
	}
	return nil
}

// Import reads the records and imports them into the tenant.
func (p *SettingsPart) Import(ctx context.Context, t *Target, r io.Reader) error {
	recs, err := settings.DecodeArchive(r)
	if err != nil {
		return fmt.Errorf("%w: settings.json: %v", ErrBackupCorrupt, err)
	}
	if len(recs) == 0 {
		return nil
	}
	return p.Settings.Import(t.Context(ctx), recs)
}
