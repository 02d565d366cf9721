package pkcs11kms

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
)

// White-box tests of how CreateKey settles a race with another process,
// which a test cannot make happen at a chosen moment: here "the other
// process" makes or destroys its key through the token connection, at the
// points of CreateKey the hooks expose.

// raceSetup returns a KeyMaker on a new token, the URI of its key
// labelled "tenancy-tenant-acme" and the token connection, with
// settleTime set to settle for the test.
func raceSetup(t *testing.T, settle time.Duration) (*KeyMaker, string, *KeyURI, *tokenConn) {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	c, err := NewClient("pkcs11:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m, err := NewKeyMaker(c, strings.Replace(tok.URI("x"), ";object=x", "", 1))
	if err != nil {
		t.Fatal(err)
	}
	uri, err := m.KeyURI("tenancy-tenant-acme")
	if err != nil {
		t.Fatal(err)
	}
	k, conn, err := c.open(uri)
	if err != nil {
		t.Fatal(err)
	}
	setVar(t, &settleTime, settle)
	return m, uri, k, conn
}

func setVar[T any](t *testing.T, v *T, val T) {
	t.Helper()
	old := *v
	*v = val
	t.Cleanup(func() { *v = old })
}

// otherKey makes a key labelled k.Object as CreateKey in another process
// would, made at the time made, and returns its CKA_ID.
func otherKey(t *testing.T, conn *tokenConn, k *KeyURI, made time.Time, locked bool) []byte {
	t.Helper()
	if !locked {
		conn.genMu.Lock()
		defer conn.genMu.Unlock()
	}
	id := newKeyID(made)
	if _, err := generate(conn, k, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// labelledIDs returns the CKA_IDs of the keys labelled k.Object.
func labelledIDs(t *testing.T, conn *tokenConn, k *KeyURI) [][]byte {
	t.Helper()
	keys, err := findNamed(conn, k)
	if err != nil {
		t.Fatal(err)
	}
	var ids [][]byte
	for _, key := range keys {
		id, err := keyID(conn, key)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// destroyID destroys the key with CKA_ID id, as its maker giving way would.
func destroyID(t *testing.T, conn *tokenConn, k *KeyURI, id []byte) {
	t.Helper()
	key, err := conn.ctx.FindKey(id, []byte(k.Object))
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Delete(); err != nil {
		t.Fatal(err)
	}
}

// Another process makes the key between CreateKey's search and its second
// look: CreateKey destroys its own key, keeps the other's, and adopts it.
func TestCreateKeyGivesWayToAKeyMadeMeanwhile(t *testing.T) {
	m, uri, k, conn := raceSetup(t, 300*time.Millisecond)
	var other []byte
	setVar(t, &testHookGenerated, func(conn *tokenConn, k *KeyURI) {
		if other == nil {
			other = otherKey(t, conn, k, time.Now(), true)
		}
	})
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	if ids := labelledIDs(t, conn, k); len(ids) != 1 || !bytes.Equal(ids[0], other) {
		t.Fatalf("keys labelled %s: %q; want only the other process's, %q", k.Object, ids, other)
	}
}

// Both processes gave way (each saw the other's key and destroyed its
// own): CreateKey starts over and makes the key again.
func TestCreateKeyStartsOverWhenBothGaveWay(t *testing.T) {
	m, uri, k, conn := raceSetup(t, time.Second)
	var other []byte
	setVar(t, &testHookGenerated, func(conn *tokenConn, k *KeyURI) {
		if other == nil {
			other = otherKey(t, conn, k, time.Now(), true)
		}
	})
	setVar(t, &createBackoff, func(ctx context.Context, attempt int) error {
		if attempt == 1 {
			destroyID(t, conn, k, other) // the other process gives way too
		}
		return nil
	})
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	ids := labelledIDs(t, conn, k)
	if len(ids) != 1 || bytes.Equal(ids[0], other) || !conn.made[string(ids[0])] {
		t.Fatalf("keys labelled %s: %q; want one, made by CreateKey after starting over (not %q)", k.Object, ids, other)
	}
}

// A key another process made moments ago is adopted only once it is
// settleTime old: its maker may still give way. An older key, or one this
// process made, is adopted at once.
func TestCreateKeyWaitsForAYoungKeyToSettle(t *testing.T) {
	const settle = 300 * time.Millisecond
	m, uri, k, conn := raceSetup(t, settle)
	looks := 0
	setVar(t, &createBackoff, func(ctx context.Context, attempt int) error {
		looks++
		time.Sleep(10 * time.Millisecond)
		return nil
	})
	made := time.Now()
	young := otherKey(t, conn, k, made, false)
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(made); waited < settle || looks == 0 {
		t.Fatalf("CreateKey adopted a key %v old after %d looks; want it to wait until the key is %v old", waited, looks, settle)
	}
	if ids := labelledIDs(t, conn, k); len(ids) != 1 || !bytes.Equal(ids[0], young) {
		t.Fatalf("keys: %q, want only %q", ids, young)
	}

	// An old key: adopted at once.
	destroyID(t, conn, k, young)
	otherKey(t, conn, k, time.Now().Add(-time.Hour), false)
	looks = 0
	if err := m.CreateKey(t.Context(), uri); err != nil || looks != 0 {
		t.Fatalf("CreateKey of an old key: %v after %d extra looks; want nil at once", err, looks)
	}
	// This process's own key: adopted at once.
	if err := m.c.DestroyKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	looks = 0
	if err := m.CreateKey(t.Context(), uri); err != nil || looks != 0 {
		t.Fatalf("CreateKey of the key it just made: %v after %d extra looks; want nil at once", err, looks)
	}
	// A key whose maker's clock is ahead: adopted once it has been the only
	// one for settleTime.
	if err := m.c.DestroyKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	otherKey(t, conn, k, time.Now().Add(time.Hour), false)
	start := time.Now()
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < settle {
		t.Fatalf("CreateKey adopted a key from the future after %v; want %v", waited, settle)
	}
}

// Two keys that stay: CreateKey fails, chooses neither and destroys
// neither.
func TestCreateKeyFailsWhenTwoKeysStay(t *testing.T) {
	m, uri, k, conn := raceSetup(t, 100*time.Millisecond)
	a := otherKey(t, conn, k, time.Now(), false)
	b := otherKey(t, conn, k, time.Now(), false)
	err := m.CreateKey(t.Context(), uri)
	if !errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), "2 keys have that label") {
		t.Fatalf("CreateKey = %v, want ErrKeyExists saying there are 2 keys", err)
	}
	if ids := labelledIDs(t, conn, k); len(ids) != 2 || !bytes.Equal(ids[0], a) && !bytes.Equal(ids[0], b) {
		t.Fatalf("keys after CreateKey failed: %q, want %q and %q", ids, a, b)
	}
}

// GetAEAD that finds a second key made moments ago waits for its maker to
// give way; with two keys that stay, it fails.
func TestGetAEADWaitsForARaceToSettle(t *testing.T) {
	m, uri, k, conn := raceSetup(t, 2*time.Second)
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatal(err)
	}
	loser := otherKey(t, conn, k, time.Now(), false)
	go func() { // the loser gives way
		time.Sleep(100 * time.Millisecond)
		key, err := conn.ctx.FindKey(loser, []byte(k.Object))
		if err == nil {
			err = key.Delete()
		}
		if err != nil {
			t.Errorf("destroying the loser's key: %v", err)
		}
	}()
	if _, err := m.c.GetAEAD(uri); err != nil {
		t.Fatalf("GetAEAD while the loser of a race gives way: %v", err)
	}
	settleTime = 100 * time.Millisecond
	otherKey(t, conn, k, time.Now(), false)
	if _, err := m.c.GetAEAD(uri); !errors.Is(err, ErrHSM) || !strings.Contains(err.Error(), "2 keys") {
		t.Fatalf("GetAEAD with two keys that stay: %v", err)
	}
}
