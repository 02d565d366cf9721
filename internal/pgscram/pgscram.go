// Package pgscram computes PostgreSQL's SCRAM-SHA-256 password verifiers
// in Go, so that a password reaches the server only as a verifier
// (ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'), never in clear text that
// log_statement or pg_stat_statements would keep. Package store exports it
// as store.SCRAMVerifier; internal/pgtest, which store's tests import, uses
// it directly.
package pgscram

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/xdg-go/scram"
)

// Prefix begins every verifier Verifier returns.
const Prefix = "SCRAM-SHA-256$"

// Verifier returns the SCRAM-SHA-256 verifier of password with salt and
// iterations, in the form PostgreSQL stores in pg_authid.rolpassword:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64. The
// password is normalised with SASLprep, as PostgreSQL does. Iterations
// must be at least 1 and salt not empty.
func Verifier(password string, salt []byte, iterations int) (string, error) {
	if iterations < 1 {
		return "", fmt.Errorf("SCRAM iterations %d: must be at least 1", iterations)
	}
	if len(salt) == 0 {
		return "", errors.New("SCRAM salt: must not be empty")
	}
	// The user name takes no part in the stored credentials.
	client, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return "", fmt.Errorf("SCRAM: %w", err)
	}
	cred, err := client.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	if err != nil {
		return "", fmt.Errorf("SCRAM: %w", err)
	}
	b64 := base64.StdEncoding.EncodeToString
	return Prefix + strconv.Itoa(iterations) + ":" + b64(salt) + "$" + b64(cred.StoredKey) + ":" + b64(cred.ServerKey), nil
}
