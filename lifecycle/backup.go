package lifecycle

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// ErrBackupCorrupt is wrapped by Restore's error for an archive that does
// not decrypt, or whose contents do not match its manifest.
var ErrBackupCorrupt = errors.New("lifecycle: backup archive corrupt")

// BackupFormat names the archive format in every manifest.
const BackupFormat = "tenancy-backup/1"

// Backup backs a tenant up into one archive in a backup bucket, before
// deprovisioning deletes it (Config.Backup), and restores such an
// archive into a fresh tenant (Restore).
//
// The archive is a tar stream encrypted with the streaming AEAD of a
// backup key (keys.Manager, keyset KeyID), not the tenant's own: the
// tenant's keys are shredded after the backup, and the backup still
// opens. It holds the tenant's rows, table by table, as JSON Lines
// (rows/<table>.jsonl, without the tenant_id column, read by the backup
// role: see store.Admin.BackupTx), its audit log among them (table
// audit_log), its objects decrypted with the tenant's key (objects/<key>),
// the files of Parts (parts/<name>), and, last, manifest.json: the
// tenant, the run, and each file's size and SHA-256. The digest of the
// whole encrypted archive goes into the journal and into the deletion
// record of the platform's audit trail.
//
// Columns the application sealed with keys.Manager.Seal are backed up as
// they are stored: ciphertext under the tenant's data key, which
// crypto-shredding destroys. Export what must survive deprovisioning in
// the clear through a BackupPart (as lifecycle/settings does with the
// tenant's integration secrets).
type Backup struct {
	// Admin is the control plane, and reads the tenant's rows.
	Admin *store.Admin
	// Role is the backup role: BYPASSRLS and nothing else (see
	// store.Admin.BackupTx).
	Role string
	// Bucket is the backup bucket (a gocloud bucket of the platform's,
	// not a tenant's view). Archives are written under backups/<id>/.
	Bucket *gcblob.Bucket
	// Keys holds the backup key (KeyID) and, for objects, the tenant's.
	Keys *keys.Manager
	// KeyID is the keyset of the backup key: an ID provisioned with
	// Keys.Provision for backups, never a tenant's.
	KeyID tenant.ID
	// Objects, if set, are the tenant buckets whose objects are backed up.
	Objects *blob.Buckets
	// Parts are further contents of the archive (settings, say).
	Parts []BackupPart
	// TempDir is where a backup or a restore stages the archive's files
	// (os.TempDir() if ""), each encrypted with a key held only in
	// memory; it needs room for the tenant's data.
	TempDir string
}

// A BackupPart is something more a Backup archives, and a Restore puts
// back: one file, parts/<Name>. A part that implements
// interface{ Tables() []string } archives and restores those tables of
// the tenant itself: Backup does not dump their rows, nor Restore copy
// them. A part that implements
// interface{ Fresh(ctx context.Context, t *Target) error } is asked,
// before Restore writes anything, whether the target holds none of its
// data yet.
type BackupPart interface {
	// Name is the file's name: 1 to 40 bytes of a-z, 0-9, '-' and '.'.
	Name() string
	// Export writes the tenant's part (t.ID()) to w, reading the tenant's
	// tables through src, in the backup's snapshot.
	Export(ctx context.Context, t *Target, src BackupSource, w io.Writer) error
	// Import puts the part read from r into tenant t.ID() (a fresh one).
	Import(ctx context.Context, t *Target, r io.Reader) error
}

// BackupSource is the backup's read of the tenant: one read-only
// snapshot, as the backup role (the tenant itself is suspended and
// cannot log in).
type BackupSource interface {
	// Query runs a query in the snapshot. The backup role bypasses row
	// level security: filter on tenant_id (in the shared-pool mode another
	// tenant may have written rows of its own into this tenant's tables).
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	// Schema returns the tenant's schema.
	Schema() string
}

type backupSource struct {
	tx     pgx.Tx
	schema string
}

func (s backupSource) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return s.tx.Query(ctx, sql, args...)
}

func (s backupSource) Schema() string { return s.schema }

// Manifest describes an archive; it is its last file, manifest.json.
type Manifest struct {
	Format    string         `json:"format"`
	Tenant    string         `json:"tenant"`
	Name      string         `json:"name"`
	Tier      string         `json:"tier"`
	Region    string         `json:"region"`
	Run       int64          `json:"run"`
	CreatedAt time.Time      `json:"created_at"`
	Files     []ManifestFile `json:"files"`
}

// ManifestFile is one file of an archive.
type ManifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Rows counts the rows of a rows/ file, and the objects of objects/.
	Rows int64 `json:"rows,omitempty"`
}

// Archive is a backup as written: where, its digest, and its manifest.
type Archive struct {
	// Key is the archive's key in the backup bucket.
	Key string `json:"key"`
	// Size and SHA256 are those of the encrypted archive as stored.
	Size     int64    `json:"size"`
	SHA256   string   `json:"sha256"`
	Manifest Manifest `json:"manifest"`
}

func (b *Backup) describe() string {
	return "an archive under backups/ in the backup bucket, encrypted to backup key " + b.KeyID.String()
}

// check reports a Backup that cannot work.
func (b *Backup) check() error {
	switch {
	case b.Admin == nil || b.Bucket == nil || b.Keys == nil:
		return fmt.Errorf("%w: Backup needs Admin, Bucket and Keys", ErrInvalidConfig)
	case b.Role == "":
		return fmt.Errorf("%w: Backup.Role is required (a role with BYPASSRLS and nothing else)", ErrInvalidConfig)
	case b.KeyID.IsZero():
		return fmt.Errorf("%w: Backup.KeyID is required (the keyset of the backup key)", ErrInvalidConfig)
	}
	for i, p := range b.Parts {
		if p == nil || !partName(p.Name()) {
			return fmt.Errorf("%w: Backup.Parts[%d]: a name of 1 to 40 bytes of a-z, 0-9, '-' and '.' is required", ErrInvalidConfig, i)
		}
	}
	return nil
}

func partName(n string) bool {
	if n == "" || len(n) > 40 || n[0] == '.' || strings.Contains(n, "..") {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// archiveKey is where run's archive of tenant id goes: the same key on a
// resumed run, which writes it anew, and another for every other run,
// here or in another environment sharing the backup bucket (the run's
// start, to the microsecond, tells runs of one number apart).
func archiveKey(id tenant.ID, run int64, started time.Time) string {
	return fmt.Sprintf("backups/%s/run-%d-%s.tar.enc", id, run, started.UTC().Format("20060102T150405.000000Z"))
}

// associatedData binds an archive to its tenant and key.
func associatedData(id tenant.ID, key string) []byte {
	return []byte(BackupFormat + "\x00" + id.String() + "\x00" + key)
}

// BackupNow archives tenant id into the backup bucket now, as
// deprovisioning does (run 0 in the archive's key and manifest), without
// suspending it: the archive is one consistent snapshot of its rows, but
// objects written meanwhile may or may not be in it.
func (b *Backup) BackupNow(ctx context.Context, id tenant.ID) (*Archive, error) {
	info, err := b.Admin.Tenant(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: backup %s: %w", id, err)
	}
	return b.backup(ctx, &Target{Info: info, Op: OpDeprovision, started: time.Now()})
}

// backup writes t's archive.
func (b *Backup) backup(ctx context.Context, t *Target) (*Archive, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	st, err := newStage(b.TempDir, "tenancy-backup-")
	if err != nil {
		return nil, err
	}
	defer st.remove()
	m := Manifest{Format: BackupFormat, Tenant: t.ID().String(), Name: t.Info.Name, Tier: string(t.Info.Tier),
		Region: t.Info.Region, Run: t.Run, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	add := func(name string, write func(w io.Writer) (int64, error)) error {
		f, err := st.create(len(m.Files))
		if err != nil {
			return err
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h)}
		bw := bufio.NewWriter(cw)
		n, err := write(bw)
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		m.Files = append(m.Files, ManifestFile{Name: name, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil)), Rows: n})
		return nil
	}
	// 1. Rows, as the backup role, in one snapshot.
	partTables := b.partTables(b.Parts)
	err = b.Admin.BackupTx(ctx, t.ID(), b.Role, func(tx pgx.Tx, tables []store.BackupTable) error {
		for _, tb := range tables {
			name := "rows/" + tb.Name + ".jsonl"
			if tb.Shared {
				name = "rows/shared." + tb.Schema + "." + tb.Name + ".jsonl"
			} else if slices.Contains(partTables, tb.Name) {
				continue // its part archives it
			}
			if err := add(name, func(w io.Writer) (int64, error) { return dumpTable(ctx, tx, tb, t.ID(), w) }); err != nil {
				return err
			}
		}
		// Parts, in the same snapshot.
		src := backupSource{tx: tx, schema: t.ID().SchemaName()}
		for _, p := range b.Parts {
			if err := add("parts/"+p.Name(), func(w io.Writer) (int64, error) { return 0, p.Export(ctx, t, src, w) }); err != nil {
				return fmt.Errorf("part %s: %w", p.Name(), err)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrUnknownTenant) {
		return nil, fmt.Errorf("lifecycle: backup %s: %w", t.ID(), err)
	}
	// 2. Objects, decrypted with the tenant's key.
	if b.Objects != nil {
		if err := b.dumpObjects(ctx, t, add); err != nil {
			return nil, fmt.Errorf("lifecycle: backup %s: objects: %w", t.ID(), err)
		}
	}
	// 3. The archive: tar, encrypted to the backup key, with the manifest last.
	key := archiveKey(t.ID(), t.Run, t.started)
	a, err := b.writeArchive(ctx, t.ID(), key, m, st)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: backup %s: %w", t.ID(), err)
	}
	return a, nil
}

// dumpTable writes tb's rows of tenant id as JSON Lines without
// tenant_id, returning how many. Every table is filtered on tenant_id,
// not only the shared ones: the backup role bypasses row level security,
// and in the shared-pool mode another tenant's session may have written
// rows (with its own tenant_id) into this tenant's tables.
func dumpTable(ctx context.Context, tx pgx.Tx, tb store.BackupTable, id tenant.ID, w io.Writer) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT (to_jsonb(t) - 'tenant_id')::text FROM `+tb.Ident()+` t WHERE t.tenant_id = $1`, id.String())
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return n, err
		}
		if _, err := io.WriteString(w, line+"\n"); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

// dumpObjects adds every object of t, decrypted, under objects/.
func (b *Backup) dumpObjects(ctx context.Context, t *Target, add func(string, func(io.Writer) (int64, error)) error) error {
	tctx := t.Context(ctx)
	view, err := b.Objects.For(tctx)
	if err != nil {
		return err
	}
	defer view.Close()
	it := view.List(nil)
	for {
		obj, err := it.Next(tctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if obj.IsDir {
			continue
		}
		err = add("objects/"+obj.Key, func(w io.Writer) (int64, error) {
			r, err := view.NewReader(tctx, obj.Key, nil)
			if err != nil {
				return 0, err
			}
			defer r.Close()
			_, err = io.Copy(w, r)
			return 1, err
		})
		if err != nil {
			return err
		}
	}
}

// writeArchive writes the tar of files and the manifest, encrypted, to key.
func (b *Backup) writeArchive(ctx context.Context, id tenant.ID, key string, m Manifest, st *stage) (*Archive, error) {
	aead, err := b.Keys.StreamingAEAD(tenant.NewContext(ctx, b.KeyID))
	if err != nil {
		return nil, fmt.Errorf("the backup key %s: %w", b.KeyID, err)
	}
	// Cancelling the writer's context before Close discards what it
	// wrote: a failed archive is never left half-written.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bw, err := b.Bucket.NewWriter(wctx, key, &gcblob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(bw, h)}
	ew, err := aead.NewEncryptingWriter(cw, associatedData(id, key))
	if err != nil {
		cancel()
		_ = bw.Close()
		return nil, err
	}
	tw := tar.NewWriter(ew)
	err = func() error {
		for i, f := range m.Files {
			if err := addFile(tw, f.Name, st, i, f.Size, m.CreatedAt); err != nil {
				return err
			}
		}
		mj, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o600, Size: int64(len(mj)), ModTime: m.CreatedAt}); err != nil {
			return err
		}
		if _, err := tw.Write(mj); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return ew.Close()
	}()
	if err != nil {
		cancel()
		_ = bw.Close()
		return nil, err
	}
	if err := bw.Close(); err != nil {
		return nil, err
	}
	return &Archive{Key: key, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil)), Manifest: m}, nil
}

func addFile(tw *tar.Writer, name string, st *stage, i int, size int64, at time.Time) error {
	f, err := st.open(i)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: at}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RestoreTarget is where Restore puts an archive's contents: a fresh,
// active tenant, provisioned in this environment or another.
type RestoreTarget struct {
	// DB is the tenant-scoped store the tenant's rows are written
	// through, as the tenant itself (its login role, under row level
	// security): a row can land in no other tenant.
	DB *store.DB
	// Objects, if set, receives the objects (encrypted anew with the
	// tenant's key).
	Objects *blob.Buckets
	// Parts import the archive's parts in the target environment (a
	// SettingsPart over its settings, say); nil means the Backup's own.
	Parts []BackupPart
}

// RestoreResult reports a Restore.
type RestoreResult struct {
	Manifest Manifest
	// Rows counts the rows written per table; Objects the objects.
	Rows    map[string]int64
	Objects int
	// Skipped are the archive's files not restored as rows: the audit
	// log's tables (its chain is keyed by the old tenant's audit key; the
	// archive keeps it as evidence) and the tables of Parts (restored by
	// the part).
	Skipped []string
}

// skippedTables are tables Restore does not write: the audit log, whose
// MAC chain belongs to the archived tenant's (shredded) audit key.
var skippedTables = []string{"audit_log", "audit_log_writer"}

// Restore reads the archive at key from the backup bucket, checks it
// against its manifest (every file's size and SHA-256; nothing is
// written before the whole archive has been read and checked), and
// writes its rows, objects and parts into tenant into, which must be a
// fresh, provisioned tenant with the same tables (the same migrations)
// and no rows yet in them. into may be the archived tenant's ID in a
// fresh environment, or a new ID. An archive that does not decrypt, was
// cut short or changed fails with an error wrapping ErrBackupCorrupt.
func (b *Backup) Restore(ctx context.Context, key string, into tenant.ID, to RestoreTarget) (*RestoreResult, error) {
	if b.Bucket == nil || b.Keys == nil || b.KeyID.IsZero() {
		return nil, fmt.Errorf("%w: Restore needs Bucket, Keys and KeyID", ErrInvalidConfig)
	}
	if to.DB == nil {
		return nil, fmt.Errorf("%w: RestoreTarget.DB is required", ErrInvalidConfig)
	}
	m, st, err := b.readArchive(ctx, key)
	if st != nil {
		defer st.remove()
	}
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Manifest: *m, Rows: map[string]int64{}}
	parts := to.Parts
	if parts == nil {
		parts = b.Parts
	}
	partTables := b.partTables(parts)
	tctx := tenant.NewContext(ctx, into)
	t := &Target{Info: tenant.Info{ID: into, Name: m.Name, Tier: tenant.Tier(m.Tier), Region: m.Region}, Op: OpProvision}
	// 1. The rows, all tables in one transaction of the tenant, into
	// tables that must be empty: either every row is restored or none.
	var tables []restoreFile
	for i, f := range m.Files {
		switch {
		case strings.HasPrefix(f.Name, "rows/shared."):
			res.Skipped = append(res.Skipped, f.Name+" (a shared table: restore by hand)")
		case strings.HasPrefix(f.Name, "rows/"):
			table := strings.TrimSuffix(strings.TrimPrefix(f.Name, "rows/"), ".jsonl")
			if slices.Contains(skippedTables, table) || slices.Contains(partTables, table) {
				res.Skipped = append(res.Skipped, f.Name)
				continue
			}
			tables = append(tables, restoreFile{table: table, file: i})
		}
	}
	// The target must be fresh everywhere the archive writes, before
	// anything is written: its object prefix, and each part's data.
	if to.Objects != nil {
		left, err := to.Objects.Remains(ctx, into, 1)
		if err != nil {
			return res, fmt.Errorf("lifecycle: restore into %s: %w", into, err)
		}
		if len(left) > 0 {
			return res, fmt.Errorf("lifecycle: restore into %s: it has objects already: restore into a fresh tenant", into)
		}
	}
	for _, p := range parts {
		if f, ok := p.(interface {
			Fresh(ctx context.Context, t *Target) error
		}); ok {
			if err := f.Fresh(ctx, t); err != nil {
				return res, fmt.Errorf("lifecycle: restore into %s: part %s: %w", into, p.Name(), err)
			}
		}
	}
	err = to.DB.Tx(tctx, func(tx *store.Tx) error {
		for _, rf := range tables {
			var any bool
			if err := tx.QueryRow(tctx, `SELECT EXISTS (SELECT 1 FROM `+pgx.Identifier{rf.table}.Sanitize()+`)`).Scan(&any); err != nil {
				return fmt.Errorf("table %s: %w (restore into a tenant with the same migrations)", rf.table, err)
			}
			if any {
				return fmt.Errorf("table %s has rows already: restore into a fresh tenant", rf.table)
			}
		}
		for _, rf := range tables {
			n, err := restoreTable(tctx, tx, rf.table, st, rf.file)
			if err != nil {
				return fmt.Errorf("table %s: %w", rf.table, err)
			}
			res.Rows[rf.table] = n
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("lifecycle: restore into %s: %w", into, err)
	}
	// 2. Objects and parts.
	for i, f := range m.Files {
		switch {
		case strings.HasPrefix(f.Name, "objects/"):
			if to.Objects == nil {
				res.Skipped = append(res.Skipped, f.Name)
				continue
			}
			if err := restoreObject(tctx, to.Objects, strings.TrimPrefix(f.Name, "objects/"), st, i); err != nil {
				return res, fmt.Errorf("lifecycle: restore into %s: %s: %w", into, f.Name, err)
			}
			res.Objects++
		case strings.HasPrefix(f.Name, "parts/"):
			name := strings.TrimPrefix(f.Name, "parts/")
			var part BackupPart
			for _, p := range parts {
				if p.Name() == name {
					part = p
				}
			}
			if part == nil {
				res.Skipped = append(res.Skipped, f.Name+" (no such part to import it)")
				continue
			}
			fh, err := st.open(i)
			if err != nil {
				return res, err
			}
			err = part.Import(ctx, t, fh)
			fh.Close()
			if err != nil {
				return res, fmt.Errorf("lifecycle: restore into %s: part %s: %w", into, name, err)
			}
		}
	}
	return res, nil
}

// readArchive decrypts and unpacks the archive at key into a temporary
// directory (files named by their index in the manifest) and checks it.
func (b *Backup) readArchive(ctx context.Context, key string) (*Manifest, *stage, error) {
	parts := strings.Split(key, "/")
	if len(parts) != 3 || parts[0] != "backups" {
		return nil, nil, fmt.Errorf("%w: archive key %q is not backups/<tenant>/<name>", ErrInvalidConfig, key)
	}
	id, err := tenant.ParseID(parts[1])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: archive key %q: %w", ErrInvalidConfig, key, err)
	}
	aead, err := b.Keys.StreamingAEAD(tenant.NewContext(ctx, b.KeyID))
	if err != nil {
		return nil, nil, fmt.Errorf("lifecycle: restore: the backup key %s: %w", b.KeyID, err)
	}
	r, err := b.Bucket.NewReader(ctx, key, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("lifecycle: restore: open %s: %w", key, err)
	}
	defer r.Close()
	dr, err := aead.NewDecryptingReader(r, associatedData(id, key))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrBackupCorrupt, key, err)
	}
	st, err := newStage(b.TempDir, "tenancy-restore-")
	if err != nil {
		return nil, nil, err
	}
	corrupt := func(format string, args ...any) (*Manifest, *stage, error) {
		return nil, st, fmt.Errorf("%w: %s: %s", ErrBackupCorrupt, key, fmt.Sprintf(format, args...))
	}
	type got struct {
		size int64
		sum  string
	}
	var seen []string
	sums := map[string]got{}
	var manifest *Manifest
	tr := tar.NewReader(dr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return corrupt("%v", err)
		}
		if manifest != nil {
			return corrupt("a file after the manifest")
		}
		if h.Name == "manifest.json" {
			data, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				return corrupt("manifest: %v", err)
			}
			manifest = &Manifest{}
			if err := json.Unmarshal(data, manifest); err != nil {
				return corrupt("manifest: %v", err)
			}
			continue
		}
		if h.Typeflag != tar.TypeReg || path.Clean(h.Name) != h.Name || strings.HasPrefix(h.Name, "/") || strings.Contains(h.Name, "..") {
			return corrupt("file %q is not a plain relative file", h.Name)
		}
		if _, dup := sums[h.Name]; dup {
			return corrupt("file %q twice", h.Name)
		}
		f, err := st.create(len(seen))
		if err != nil {
			return nil, st, err
		}
		hs := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, hs), tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return corrupt("file %q: %v", h.Name, err)
		}
		seen = append(seen, h.Name)
		sums[h.Name] = got{n, hex.EncodeToString(hs.Sum(nil))}
	}
	if manifest == nil {
		return corrupt("no manifest (cut short?)")
	}
	if manifest.Format != BackupFormat || manifest.Tenant != id.String() {
		return corrupt("manifest of format %q, tenant %q; want %s of %s", manifest.Format, manifest.Tenant, BackupFormat, id)
	}
	if len(manifest.Files) != len(seen) {
		return corrupt("manifest lists %d files, archive holds %d", len(manifest.Files), len(seen))
	}
	for i, f := range manifest.Files {
		g, ok := sums[f.Name]
		if !ok || seen[i] != f.Name || g.size != f.Size || g.sum != f.SHA256 {
			return corrupt("file %q does not match the manifest", f.Name)
		}
	}
	return manifest, st, nil
}

type restoreFile struct {
	table string
	file  int
}

// restoreTable writes the JSON Lines of local into table in tx, as the
// tenant, a thousand rows per statement, with PostgreSQL's own conversion
// of each column (jsonb_populate_recordset).
func restoreTable(ctx context.Context, tx *store.Tx, table string, st *stage, file int) (int64, error) {
	f, err := st.open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	err = func() error {
		rows, err := tx.Query(ctx, `SELECT a.attname, a.attidentity = 'a' FROM pg_attribute a
			WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND a.attname <> 'tenant_id'
			ORDER BY a.attnum`, pgx.Identifier{table}.Sanitize())
		if err != nil {
			return err
		}
		var cols []string
		always := false
		for rows.Next() {
			var c string
			var a bool
			if err := rows.Scan(&c, &a); err != nil {
				rows.Close()
				return err
			}
			cols = append(cols, pgx.Identifier{c}.Sanitize())
			always = always || a
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(cols) == 0 {
			return fmt.Errorf("the tenant has no table %s (restore into a tenant with the same migrations)", table)
		}
		list := strings.Join(cols, ", ")
		override := ""
		if always {
			override = " OVERRIDING SYSTEM VALUE"
		}
		sql := `INSERT INTO ` + pgx.Identifier{table}.Sanitize() + ` (` + list + `)` + override +
			` SELECT ` + list + ` FROM jsonb_populate_recordset(NULL::` + pgx.Identifier{table}.Sanitize() + `, $1::jsonb)`
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 256<<20)
		batch := make([]json.RawMessage, 0, 1000)
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			arr, err := json.Marshal(batch)
			if err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, sql, string(arr))
			if err != nil {
				return err
			}
			n += tag.RowsAffected()
			batch = batch[:0]
			return nil
		}
		for sc.Scan() {
			line := slices.Clone(sc.Bytes())
			if !json.Valid(line) {
				return fmt.Errorf("%w: a row is not JSON", ErrBackupCorrupt)
			}
			batch = append(batch, line)
			if len(batch) == cap(batch) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		return flush()
	}()
	return n, err
}

// restoreObject writes the object at local under key, as the tenant of ctx.
func restoreObject(ctx context.Context, bk *blob.Buckets, key string, st *stage, file int) error {
	view, err := bk.For(ctx)
	if err != nil {
		return err
	}
	defer view.Close()
	f, err := st.open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := view.NewWriter(ctx, key, nil)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, f); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// partTables returns the tables parts restore themselves.
func (b *Backup) partTables(parts []BackupPart) []string {
	var out []string
	for _, p := range parts {
		if pt, ok := p.(interface{ Tables() []string }); ok {
			out = append(out, pt.Tables()...)
		}
	}
	return out
}
