package store

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/rtmx-ai/tenancy/internal/pgscram"
	"github.com/rtmx-ai/tenancy/tenant"
)

// LoginSecret is one version of the platform secret from which store
// derives the password of every tenant login role (HKDF-SHA256, per role
// and version) and the opaque names of new tenant roles. Give the same
// secrets to the [Admin] that creates logins and to every [DB] that
// connects with them. The key never leaves the process: PostgreSQL receives
// only SCRAM-SHA-256 verifiers computed from the derived passwords, and
// nothing prints the key (every fmt verb and slog print a redacted form).
// Whoever holds the key can log in as every tenant: keep it with the
// admin's credentials, not in application configuration files, and
// rotate it ([Admin.RotateLogins]) if it may have leaked.
type LoginSecret struct {
	// Version numbers the secret, from 1. The directory records, per
	// tenant login, the version its password was derived from.
	Version int
	// Key is at least 32 bytes of random data.
	Key []byte
}

const minSecretLen = 32

// String returns the version only, never the key.
func (s LoginSecret) String() string {
	return "store.LoginSecret{Version: " + strconv.Itoa(s.Version) + ", Key: redacted}"
}

// GoString is String, so %#v prints no key either.
func (s LoginSecret) GoString() string { return s.String() }

// Format prints String under every verb.
func (s LoginSecret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue logs the version only.
func (s LoginSecret) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("version", s.Version), slog.String("key", "redacted"))
}

// MarshalJSON encodes the version only.
func (s LoginSecret) MarshalJSON() ([]byte, error) {
	return []byte(`{"version":` + strconv.Itoa(s.Version) + `,"key":"redacted"}`), nil
}

// secrets is a validated keyring of login secrets.
type secrets struct {
	byVersion map[int][]byte
	current   int // the newest version
}

func newSecrets(field string, in []LoginSecret) (*secrets, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("store: %w: %s: at least one LoginSecret is required (32 random bytes or more; keep it with the platform's other secrets)", ErrInvalidConfig, field)
	}
	s := &secrets{byVersion: make(map[int][]byte, len(in))}
	for i, ls := range in {
		switch {
		case ls.Version < 1:
			return nil, fmt.Errorf("store: %w: %s[%d].Version must be 1 or more, got %d", ErrInvalidConfig, field, i, ls.Version)
		case len(ls.Key) < minSecretLen:
			return nil, fmt.Errorf("store: %w: %s[%d].Key must be at least %d bytes, got %d", ErrInvalidConfig, field, i, minSecretLen, len(ls.Key))
		case s.byVersion[ls.Version] != nil:
			return nil, fmt.Errorf("store: %w: %s[%d]: version %d is given twice", ErrInvalidConfig, field, i, ls.Version)
		}
		s.byVersion[ls.Version] = slices.Clone(ls.Key)
		s.current = max(s.current, ls.Version)
	}
	return s, nil
}

func (s *secrets) derive(version int, purpose, subject string, n int) ([]byte, error) {
	key, ok := s.byVersion[version]
	if !ok {
		return nil, fmt.Errorf("%w: no LoginSecret of version %d is configured (the directory records logins of that version: add it to LoginSecrets, or rotate the logins with Admin.RotateLogins)", ErrInvalidConfig, version)
	}
	return hkdf.Key(sha256.New, key, nil, "tenancy/store/"+purpose+"/v1\x00"+subject, n)
}

// password returns the password of role under secret version.
func (s *secrets) password(version int, role string) (string, error) {
	b, err := s.derive(version, "login-password", role, 32)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// verifier returns the SCRAM-SHA-256 verifier of role's password under
// secret version, in the form PostgreSQL stores in pg_authid.rolpassword.
// The salt is derived too, so the verifier is deterministic: the admin can
// tell a verifier it set from one a tenant set itself.
func (s *secrets) verifier(version int, role string, iterations int) (string, error) {
	pw, err := s.password(version, role)
	if err != nil {
		return "", err
	}
	salt, err := s.derive(version, "scram-salt", role, 16)
	if err != nil {
		return "", err
	}
	v, err := pgscram.Verifier(pw, salt, iterations)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	return v, nil
}

// SCRAMVerifier returns a SCRAM-SHA-256 verifier of password, with a
// random 16-byte salt and iterations (at least 1; [DefaultSCRAMIterations]
// for a password of 256 random bits, 4096 as PostgreSQL's default), in the
// form PostgreSQL stores in pg_authid.rolpassword. Set a role's password
// with it (ALTER ROLE r PASSWORD 'SCRAM-SHA-256$...') so that the password
// never reaches the server, where log_statement and pg_stat_statements
// would keep a clear-text one; the verifier is no secret that logs in, but
// a weak password can be guessed from it offline. store sets tenant logins'
// passwords this way.
func SCRAMVerifier(password string, iterations int) (string, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt) // never fails (crypto/rand)
	v, err := pgscram.Verifier(password, salt, iterations)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	return v, nil
}

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// roleName returns the opaque login role name of tenant id: the role
// prefix, "t", and 24 characters of a keyed hash of the ID (120 bits), so
// that the cluster-wide role list (pg_roles, pg_stat_activity), which every
// tenant can read, names no tenant.
func (s *secrets) roleName(prefix string, id tenant.ID) (string, error) {
	return s.roleNameOf(s.current, prefix, id)
}

// roleNameOf is the name of tenant id's login role under the secret of
// version v.
func (s *secrets) roleNameOf(v int, prefix string, id tenant.ID) (string, error) {
	key, err := s.derive(v, "role-name", "", 32)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id.String()))
	return prefix + "t" + nameEncoding.EncodeToString(m.Sum(nil))[:24], nil
}

// DefaultSCRAMIterations is the PBKDF2 iteration count of the SCRAM
// verifiers store sets. Every login password is 256 random bits derived
// from the platform secret, so a stolen verifier cannot be brute-forced at
// any iteration count, and a low count keeps a tenant's first connection
// fast (the client runs the iterations at every login; 4096 add about
// 0.6–0.9 ms to it here, see docs/benchmarks.md). Raise it with [AdminConfig.SCRAMIterations] if a
// policy demands PostgreSQL's default of 4096.
const DefaultSCRAMIterations = 16
