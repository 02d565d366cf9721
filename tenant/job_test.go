package tenant_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// testKey returns a distinctive key of n bytes, seeded so that different
// seeds give different keys.
func testKey(seed byte, n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i*7)
	}
	return k
}

var (
	keyOld = testKey(0x10, 32)
	keyNew = testKey(0x80, 48)
	keyOut = testKey(0x33, 32) // known to nobody in these tests
)

func newCarrier(t testing.TB, key []byte, old ...[]byte) *tenant.JobCarrier {
	t.Helper()
	c, err := tenant.NewJobCarrier(key, old...)
	if err != nil {
		t.Fatalf("NewJobCarrier: %v", err)
	}
	return c
}

func ctxFor(s string) context.Context {
	return tenant.NewContext(context.Background(), tenant.MustParseID(s))
}

// jobOf is a job with payload p, an ID and an expiry an hour away.
func jobOf(p []byte) tenant.Job {
	return tenant.Job{ID: "job-1", Expires: time.Now().Add(time.Hour), Payload: p}
}

// openJob opens env with no audience and no replay check, and returns
// the payload.
func openJob(c *tenant.JobCarrier, ctx context.Context, env []byte) (context.Context, []byte, error) {
	ctx, j, err := c.Open(ctx, env, tenant.OpenOptions{})
	return ctx, j.Payload, err
}

func seal(t testing.TB, c *tenant.JobCarrier, tenantID string, payload []byte) []byte {
	t.Helper()
	env, err := c.Seal(ctxFor(tenantID), jobOf(payload))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return env
}

// editEnvelope decodes env as JSON, lets edit change it and re-encodes it.
func editEnvelope(t *testing.T, env []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(env, &m); err != nil {
		t.Fatalf("envelope is not a JSON object: %v", err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// flipBase64Byte flips one bit of the decoded bytes of a base64 field.
func flipBase64Byte(t *testing.T, m map[string]any, field string, i int) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(m[field].(string))
	if err != nil {
		t.Fatalf("field %s is not base64: %v", field, err)
	}
	b[i] ^= 0x01
	m[field] = base64.StdEncoding.EncodeToString(b)
}

func TestJobSealOpen(t *testing.T) {
	c := newCarrier(t, keyNew)
	for _, payload := range [][]byte{
		[]byte(`{"job":"reindex","doc":42}`),
		{0, 1, 2, 0xff, '\n'},
		[]byte(strings.Repeat("x", 1<<16)),
		{},
	} {
		env := seal(t, c, "acme_1", payload)
		ctx, got, err := openJob(c, context.Background(), env)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("payload = %q, want %q", got, payload)
		}
		if id, ok := tenant.FromContext(ctx); !ok || id.String() != "acme_1" {
			t.Errorf("tenant after Open = %q, %v; want acme_1", id, ok)
		}
	}

	// A worker already bound to the same tenant runs the job.
	env := seal(t, c, "acme_1", []byte("p"))
	if _, _, err := openJob(c, ctxFor("acme_1"), env); err != nil {
		t.Errorf("Open into a context of the same tenant: %v", err)
	}
}

func TestJobSealWithoutTenant(t *testing.T) {
	c := newCarrier(t, keyNew)
	for name, ctx := range map[string]context.Context{
		"background": context.Background(),
		"zero ID":    tenant.NewContext(ctxFor("acme"), tenant.ID{}),
	} {
		env, err := c.Seal(ctx, jobOf([]byte("p")))
		if !errors.Is(err, tenant.ErrNoTenant) {
			t.Errorf("%s: Seal error = %v, want ErrNoTenant", name, err)
		}
		if env != nil {
			t.Errorf("%s: Seal returned an envelope %q with its error", name, env)
		}
	}
}

func TestJobOpenRejectsTampering(t *testing.T) {
	c := newCarrier(t, keyNew)
	const secret = "SECRET-PAYLOAD-7f3a"
	env := seal(t, c, "alpha", []byte(secret))

	tests := map[string][]byte{
		"re-aimed at another tenant": editEnvelope(t, env, func(m map[string]any) { m["tenant"] = "bravo" }),
		"re-aimed at an invalid tenant": editEnvelope(t, env, func(m map[string]any) {
			m["tenant"] = "alpha\x00"
		}),
		"tenant removed":       editEnvelope(t, env, func(m map[string]any) { delete(m, "tenant") }),
		"flipped payload byte": editEnvelope(t, env, func(m map[string]any) { flipBase64Byte(t, m, "payload", 3) }),
		"payload replaced":     editEnvelope(t, env, func(m map[string]any) { m["payload"] = base64.StdEncoding.EncodeToString([]byte("other")) }),
		"payload removed":      editEnvelope(t, env, func(m map[string]any) { delete(m, "payload") }),
		"flipped tag byte":     editEnvelope(t, env, func(m map[string]any) { flipBase64Byte(t, m, "tag", 0) }),
		"flipped last tag byte": editEnvelope(t, env, func(m map[string]any) {
			flipBase64Byte(t, m, "tag", 31)
		}),
		"tag truncated": editEnvelope(t, env, func(m map[string]any) {
			b, _ := base64.StdEncoding.DecodeString(m["tag"].(string))
			m["tag"] = base64.StdEncoding.EncodeToString(b[:16])
		}),
		"tag removed":          editEnvelope(t, env, func(m map[string]any) { delete(m, "tag") }),
		"tag empty":            editEnvelope(t, env, func(m map[string]any) { m["tag"] = "" }),
		"tag not base64":       editEnvelope(t, env, func(m map[string]any) { m["tag"] = "!!" }),
		"version 2":            editEnvelope(t, env, func(m map[string]any) { m["v"] = 2 }),
		"version 0":            editEnvelope(t, env, func(m map[string]any) { m["v"] = 0 }),
		"version removed":      editEnvelope(t, env, func(m map[string]any) { delete(m, "v") }),
		"version as string":    editEnvelope(t, env, func(m map[string]any) { m["v"] = "1" }),
		"duplicate tenant key": []byte(strings.Replace(string(env), `"tenant":"alpha"`, `"tenant":"alpha","TENANT":"bravo"`, 1)),
		"truncated":            env[:len(env)-1],
		"garbage":              []byte("\x00\xffnot json at all"),
		"empty":                {},
		"nil":                  nil,
		"null":                 []byte("null"),
		"empty object":         []byte("{}"),
		"array":                []byte("[]"),
		"string":               []byte(`"` + secret + `"`),
		"trailing garbage":     append(append([]byte(nil), env...), "x"...),
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, payload, err := openJob(c, context.Background(), bad)
			if !errors.Is(err, tenant.ErrJobTampered) {
				t.Fatalf("Open error = %v, want ErrJobTampered", err)
			}
			if payload != nil {
				t.Errorf("Open returned payload %q with its error", payload)
			}
			if id, ok := tenant.FromContext(ctx); ok {
				t.Errorf("Open returned a context with tenant %q with its error", id)
			}
			assertNoLeak(t, err.Error(), secret)
			if strings.Contains(err.Error(), "bravo") {
				t.Errorf("error %q echoes the envelope's tenant", err)
			}
		})
	}
}

// assertNoLeak fails if msg contains secret raw, in base64 or in hex.
func assertNoLeak(t *testing.T, msg, secret string) {
	t.Helper()
	for _, form := range []string{
		secret,
		base64.StdEncoding.EncodeToString([]byte(secret)),
		hex.EncodeToString([]byte(secret)),
	} {
		if strings.Contains(msg, form) {
			t.Errorf("message %q contains the secret (as %q)", msg, form)
		}
	}
}

func TestJobOpenEveryTruncation(t *testing.T) {
	c := newCarrier(t, keyNew)
	env := seal(t, c, "alpha", []byte("payload"))
	for n := range len(env) {
		if _, _, err := openJob(c, context.Background(), env[:n]); !errors.Is(err, tenant.ErrJobTampered) {
			t.Fatalf("Open(envelope[:%d]) error = %v, want ErrJobTampered", n, err)
		}
	}
}

func TestJobKeyRotation(t *testing.T) {
	oldC := newCarrier(t, keyOld)
	rotated := newCarrier(t, keyNew, keyOld)

	env := seal(t, oldC, "alpha", []byte("queued before rotation"))
	ctx, payload, err := openJob(rotated, context.Background(), env)
	if err != nil {
		t.Fatalf("rotated carrier cannot open an envelope of the old key: %v", err)
	}
	if id, _ := tenant.FromContext(ctx); id.String() != "alpha" || string(payload) != "queued before rotation" {
		t.Errorf("Open = %q, %q", id, payload)
	}

	// The rotated carrier seals with the new key: the old carrier does not
	// know it, a carrier with only the new key does.
	env = seal(t, rotated, "alpha", []byte("queued after rotation"))
	if _, _, err := openJob(oldC, context.Background(), env); !errors.Is(err, tenant.ErrJobTampered) {
		t.Errorf("old carrier opened an envelope sealed after rotation: %v", err)
	}
	if _, _, err := openJob(newCarrier(t, keyNew), context.Background(), env); err != nil {
		t.Errorf("new-key carrier cannot open an envelope of the rotated carrier: %v", err)
	}

	// Once the old key is retired, its envelopes no longer open.
	old := seal(t, oldC, "alpha", []byte("p"))
	if _, _, err := openJob(newCarrier(t, keyNew), context.Background(), old); !errors.Is(err, tenant.ErrJobTampered) {
		t.Errorf("retired key still opens: %v", err)
	}
}

func TestJobUnknownKey(t *testing.T) {
	env := seal(t, newCarrier(t, keyOut), "alpha", []byte("p"))
	c := newCarrier(t, keyNew, keyOld)
	if _, _, err := openJob(c, context.Background(), env); !errors.Is(err, tenant.ErrJobTampered) {
		t.Errorf("Open of an envelope of an unknown key = %v, want ErrJobTampered", err)
	}
}

func TestJobCarrierKeyLength(t *testing.T) {
	if tenant.MinJobKeyLen != 32 {
		t.Fatalf("MinJobKeyLen = %d, want 32 (HMAC-SHA256)", tenant.MinJobKeyLen)
	}
	good := testKey(1, tenant.MinJobKeyLen)
	short := testKey(2, tenant.MinJobKeyLen-1)
	if _, err := tenant.NewJobCarrier(good); err != nil {
		t.Errorf("key of MinJobKeyLen bytes rejected: %v", err)
	}
	tests := []struct {
		name  string
		key   []byte
		old   [][]byte
		field string
	}{
		{"nil key", nil, nil, "key is 0 bytes"},
		{"short key", short, nil, "key is 31 bytes"},
		{"short old[0]", good, [][]byte{short}, "old[0] is 31 bytes"},
		{"short old[1]", good, [][]byte{good, nil}, "old[1] is 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tenant.NewJobCarrier(tt.key, tt.old...)
			if err == nil {
				t.Fatalf("NewJobCarrier accepted it: %v", c)
			}
			if c != nil {
				t.Error("NewJobCarrier returned a carrier with its error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.field) || !strings.Contains(msg, "at least 32 bytes") {
				t.Errorf("error %q does not name %q and the minimum", msg, tt.field)
			}
			if strings.Contains(msg, hex.EncodeToString(short)) || strings.Contains(msg, string(short)) {
				t.Errorf("error %q contains the key", msg)
			}
		})
	}
}

func TestJobCarrierCopiesKeys(t *testing.T) {
	key := testKey(9, 32)
	c := newCarrier(t, key)
	env := seal(t, c, "alpha", []byte("p"))
	for i := range key {
		key[i] = 0
	}
	if _, _, err := openJob(c, context.Background(), env); err != nil {
		t.Errorf("changing the caller's key slice changed the carrier: %v", err)
	}
}

func TestJobOpenCrossTenant(t *testing.T) {
	c := newCarrier(t, keyNew)
	env := seal(t, c, "alpha", []byte("p"))
	worker := ctxFor("bravo")
	ctx, payload, err := openJob(c, worker, env)
	if !errors.Is(err, tenant.ErrCrossTenant) {
		t.Fatalf("Open into another tenant's context = %v, want ErrCrossTenant", err)
	}
	if payload != nil {
		t.Errorf("payload %q returned with the error", payload)
	}
	if id, _ := tenant.FromContext(ctx); id.String() != "bravo" {
		t.Errorf("returned context carries %q, want the worker's own bravo", id)
	}
	if msg := err.Error(); strings.Contains(msg, "alpha") {
		t.Errorf("error %q names the job's tenant", msg)
	}
}

func TestJobCarrierPrintsNoKeys(t *testing.T) {
	c := newCarrier(t, keyNew, keyOld)
	if got := c.String(); got != "tenant.JobCarrier(2 keys)" {
		t.Errorf("String() = %q", got)
	}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, *c), fmt.Sprintf(verb, []*tenant.JobCarrier{c}))
	}
	for _, key := range [][]byte{keyNew, keyOld} {
		forms := []string{
			string(key),
			hex.EncodeToString(key),
			strings.ToUpper(hex.EncodeToString(key)),
			base64.StdEncoding.EncodeToString(key),
			strings.Trim(fmt.Sprint(key), "[]"),        // decimal bytes
			strings.Trim(fmt.Sprintf("%o", key), "[]"), // octal bytes
			strings.Trim(fmt.Sprintf("%#v", key), "[]byte{}"),
			fmt.Sprintf("%q", key)[1:10],
		}
		for _, out := range outs {
			for _, form := range forms {
				if strings.Contains(out, form) {
					t.Errorf("printed carrier %q contains key material %q", out, form)
				}
			}
		}
	}
}

func TestJobCarrierZeroValue(t *testing.T) {
	var c tenant.JobCarrier
	env, err := c.Seal(ctxFor("alpha"), jobOf([]byte("p")))
	if err == nil {
		t.Errorf("zero JobCarrier sealed %q", env)
	}
	good := seal(t, newCarrier(t, keyNew), "alpha", []byte("p"))
	if _, _, err := openJob(&c, context.Background(), good); !errors.Is(err, tenant.ErrJobTampered) {
		t.Errorf("zero JobCarrier Open = %v, want ErrJobTampered", err)
	}
}

func TestJobCarrierConcurrent(t *testing.T) {
	c := newCarrier(t, keyNew, keyOld)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			id := fmt.Sprintf("t%d", w)
			for i := range 50 {
				p := fmt.Appendf(nil, "%s-%d", id, i)
				env, err := c.Seal(ctxFor(id), jobOf(p))
				if err != nil {
					t.Error(err)
					return
				}
				ctx, got, err := openJob(c, context.Background(), env)
				if err != nil {
					t.Error(err)
					return
				}
				if tid, _ := tenant.FromContext(ctx); tid.String() != id || !bytes.Equal(got, p) {
					t.Errorf("worker %s got tenant %q payload %q", id, tid, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestJobCarrierNil(t *testing.T) {
	var c *tenant.JobCarrier
	if _, err := c.Seal(ctxFor("alpha"), jobOf([]byte("p"))); err == nil {
		t.Error("nil JobCarrier sealed")
	}
	good := seal(t, newCarrier(t, keyNew), "alpha", []byte("p"))
	if _, _, err := openJob(c, context.Background(), good); !errors.Is(err, tenant.ErrJobTampered) {
		t.Errorf("nil JobCarrier Open = %v, want ErrJobTampered", err)
	}
	if got := c.String(); got != "tenant.JobCarrier(nil)" {
		t.Errorf("nil String() = %q", got)
	}
}

func TestJobSealNamesTheFieldThatIsWrong(t *testing.T) {
	c := newCarrier(t, keyNew)
	future := time.Now().Add(time.Hour)
	for name, tc := range map[string]struct {
		job  tenant.Job
		want []string
	}{
		"no ID":            {tenant.Job{Expires: future}, []string{"field ID:"}},
		"long ID":          {tenant.Job{ID: strings.Repeat("j", tenant.MaxJobIDLen+1), Expires: future}, []string{"field ID:", "at most"}},
		"invalid UTF-8 ID": {tenant.Job{ID: "j\xff", Expires: future}, []string{"field ID:", "UTF-8"}},
		"long audience":    {tenant.Job{ID: "j", Audience: strings.Repeat("q", tenant.MaxJobIDLen+1), Expires: future}, []string{"field Audience:"}},
		"no expiry":        {tenant.Job{ID: "j"}, []string{"field Expires:", "must be set"}},
		"past expiry":      {tenant.Job{ID: "j", Expires: time.Now().Add(-time.Second)}, []string{"field Expires:", "not in the future"}},
		"everything":       {tenant.Job{Audience: strings.Repeat("q", 201)}, []string{"field ID:", "field Audience:", "field Expires:"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Seal(ctxFor("acme"), tc.job)
			if err == nil {
				t.Fatal("Seal accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestJobOpenRejectsAnExpiredEnvelope(t *testing.T) {
	c := newCarrier(t, keyNew)
	exp := time.Now().Add(time.Minute)
	env, err := c.Seal(ctxFor("acme"), tenant.Job{ID: "j1", Expires: exp})
	if err != nil {
		t.Fatal(err)
	}
	at := func(t0 time.Time) tenant.OpenOptions { return tenant.OpenOptions{Now: func() time.Time { return t0 }} }
	if _, job, err := c.Open(context.Background(), env, at(exp.Add(-time.Nanosecond))); err != nil || !job.Expires.Equal(exp) {
		t.Fatalf("just before expiry: job %+v, err %v", job, err)
	}
	for _, t0 := range []time.Time{exp, exp.Add(time.Hour)} {
		if _, _, err := c.Open(context.Background(), env, at(t0)); !errors.Is(err, tenant.ErrJobExpired) {
			t.Fatalf("at %s: err %v, want ErrJobExpired", t0, err)
		}
	}
	// Moving the expiry later breaks the tag.
	later := editEnvelope(t, env, func(m map[string]any) { m["exp"] = exp.Add(24 * time.Hour).UnixNano() })
	if _, _, err := c.Open(context.Background(), later, at(exp.Add(time.Hour))); !errors.Is(err, tenant.ErrJobTampered) {
		t.Fatalf("edited expiry: err %v, want ErrJobTampered", err)
	}
}

func TestJobOpenRejectsAnotherAudience(t *testing.T) {
	c := newCarrier(t, keyNew)
	env, err := c.Seal(ctxFor("acme"), tenant.Job{ID: "j1", Audience: "reindex", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(context.Background(), env, tenant.OpenOptions{Audience: "reindex"}); err != nil {
		t.Fatalf("its own queue: %v", err)
	}
	for _, aud := range []string{"billing", "", "Reindex"} {
		if _, _, err := c.Open(context.Background(), env, tenant.OpenOptions{Audience: aud}); !errors.Is(err, tenant.ErrJobMisdirected) {
			t.Fatalf("opened for %q: err %v, want ErrJobMisdirected", aud, err)
		}
	}
	moved := editEnvelope(t, env, func(m map[string]any) { m["aud"] = "billing" })
	if _, _, err := c.Open(context.Background(), moved, tenant.OpenOptions{Audience: "billing"}); !errors.Is(err, tenant.ErrJobTampered) {
		t.Fatalf("edited audience: err %v, want ErrJobTampered", err)
	}
	none, err := c.Seal(ctxFor("acme"), tenant.Job{ID: "j2", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(context.Background(), none, tenant.OpenOptions{Audience: "reindex"}); !errors.Is(err, tenant.ErrJobMisdirected) {
		t.Fatalf("a job for no queue opened by a queue: err %v, want ErrJobMisdirected", err)
	}
}

func TestJobOpenRejectsAReplay(t *testing.T) {
	c := newCarrier(t, keyNew)
	var mu sync.Mutex
	ran := map[string]bool{} // what a unique key in the job table does
	var asked []string
	opts := tenant.OpenOptions{Seen: func(_ context.Context, id tenant.ID, jobID string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		k := id.String() + "/" + jobID
		asked = append(asked, k)
		seen := ran[k]
		ran[k] = true
		return seen, nil
	}}
	env, err := c.Seal(ctxFor("acme"), tenant.Job{ID: "j1", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(context.Background(), env, opts); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if _, _, err := c.Open(context.Background(), env, opts); !errors.Is(err, tenant.ErrJobReplayed) {
		t.Fatalf("second run: err %v, want ErrJobReplayed", err)
	}
	// The same job ID of another tenant is another job.
	other, err := c.Seal(ctxFor("globex"), tenant.Job{ID: "j1", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(context.Background(), other, opts); err != nil {
		t.Fatalf("another tenant's j1: %v", err)
	}
	// A forged envelope never reaches the seen-set, so it cannot burn a
	// job ID for the real job.
	forged := editEnvelope(t, env, func(m map[string]any) { m["id"] = "j9" })
	before := len(asked)
	if _, _, err := c.Open(context.Background(), forged, opts); !errors.Is(err, tenant.ErrJobTampered) {
		t.Fatalf("forged: err %v", err)
	}
	if len(asked) != before {
		t.Fatal("Seen was asked about a forged envelope")
	}
	// An error of the check fails Open.
	boom := errors.New("job table down")
	_, _, err = c.Open(context.Background(), env, tenant.OpenOptions{Seen: func(context.Context, tenant.ID, string) (bool, error) { return false, boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want the check's error", err)
	}
}
