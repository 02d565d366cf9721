package blob_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// crashChild is set in the environment of the process TestQuotaAfterKill
// starts and kills, to the JSON of a crashConfig.
const crashChild = "TENANCY_BLOB_CRASH_CHILD"

// crashConfig is what the child of TestQuotaAfterKill writes, where, and
// where it stops.
type crashConfig struct {
	PlatformURL, Dir, KEK, Tenant, Key, Stage string
	Lease                                     time.Duration
	Size                                      int
}

// crashSize is the size of the object the killed child writes.
const crashSize = 5000

// TestQuotaAfterKill kills (SIGKILL) a process writing an object through
// a tenant's view with quotas on file://, once after it reserved the
// write and before it committed the object, and once after it committed
// the object and before it recorded it. Either way the dead write's
// reservation stays counted (a write that would pass the limit with it
// is refused, so storage never holds more than the quota allows); once
// its lease has passed the account says it needs a Reconcile, which
// records what the bucket holds (the committed object, not the other)
// and drops the reservation; and the object's key is free again.
func TestQuotaAfterKill(t *testing.T) {
	if cfg := os.Getenv(crashChild); cfg != "" {
		runCrashChild(t, cfg)
		return
	}
	cp := newControlPlane(t)
	for _, stage := range []string{"reserved", "committed"} {
		t.Run(stage, func(t *testing.T) {
			kek := filepath.Join(t.TempDir(), "master.key")
			km := managerOn(t, cp.admin.Keysets(), kek)
			id, ctx := cp.tenant(t, km, "crash", tenant.TierStandard)
			cp.setQuota(t, id, store.BlobLimits{Bytes: store.NoLimit, Objects: 2})
			dir := t.TempDir()
			const lease = time.Second
			b := openURL(t, "file://"+filepath.ToSlash(dir), km, blob.WithQuotas(cp.quotas(lease)))
			v := view(t, b, ctx)
			if err := v.WriteAll(ctx, "before", make([]byte, 100), nil); err != nil {
				t.Fatal(err)
			}

			cfg, _ := json.Marshal(crashConfig{PlatformURL: cp.platformURL, Dir: dir, KEK: kek, Tenant: id.String(),
				Key: "crashed", Stage: stage, Lease: lease, Size: crashSize})
			killAt(t, string(cfg), stage)

			a := usage(t, b, ctx)
			if a.Used != (store.BlobUsage{Bytes: c(100), Objects: 1}) || a.Pending != (store.BlobUsage{Bytes: c(crashSize), Objects: 1}) {
				t.Errorf("after the kill: %+v; want the first object used and the dead write pending", a)
			}
			quotaError(t, v.WriteAll(ctx, "another", nil, nil))
			committed, err := v.Exists(ctx, "crashed")
			if err != nil || committed != (stage == "committed") {
				t.Errorf("the dead write's object exists: %v (%v)", committed, err)
			}

			deadline := time.Now().Add(20 * time.Second)
			for !usage(t, b, ctx).NeedsReconcile {
				if time.Now().After(deadline) {
					t.Fatal("the account does not say it needs a Reconcile after the lease")
				}
				time.Sleep(50 * time.Millisecond)
			}
			res, err := b.Reconcile(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if res.Dropped != (store.BlobUsage{Bytes: c(crashSize), Objects: 1}) {
				t.Errorf("Reconcile dropped %+v, want the dead write's reservation", res.Dropped)
			}
			raw := b2raw(t, dir)
			want := int64(1)
			if committed {
				want = 2
			}
			if a = checkSettled(t, b, raw, ctx); a.Used.Objects != want || res.After != a.Used {
				t.Errorf("Used %+v (Reconcile found %+v), want %d objects", a.Used, res.After, want)
			}
			if committed {
				if got, err := v.ReadAll(ctx, "crashed"); err != nil || len(got) != crashSize {
					t.Errorf("the committed object reads %d bytes, %v", len(got), err)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := v.WriteAll(wctx, "crashed", []byte("again"), nil); err != nil {
				t.Errorf("writing the dead write's key again: %v", err)
			}
			checkSettled(t, b, raw, ctx)
		})
	}
}

// b2raw opens the file:// bucket at dir as the storage admin sees it.
func b2raw(t testing.TB, dir string) *gcblob.Bucket {
	t.Helper()
	raw, err := fileblob.OpenBucket(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return raw
}

// killAt starts the child with cfg, waits until it says it reached stage,
// and kills it with SIGKILL.
func killAt(t *testing.T, cfg, stage string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestQuotaAfterKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChild+"="+cfg)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := make(chan bool, 1)
	var seen strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if sc.Text() == "STAGE "+stage {
				reached <- true
				return
			}
		}
		reached <- false
	}()
	select {
	case ok := <-reached:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("the child ended before %s:\n%s\n%s", stage, seen.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the child did not reach %s", stage)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed by SIGKILL: %v", err)
	}
}

// runCrashChild writes the object of cfg through a view with quotas and
// stops forever at cfg.Stage, for its parent to kill.
func runCrashChild(t *testing.T, cfgJSON string) {
	var cfg crashConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	scfg, err := store.ParseConfig(cfg.PlatformURL, loginSecret)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	km := managerOn(t, db.Keysets(), cfg.KEK)
	q := blob.DefaultQuotas(db.Blobs())
	q.Lease = cfg.Lease
	b, err := blob.Open(ctx, "file://"+filepath.ToSlash(cfg.Dir), km, blob.WithQuotas(q))
	if err != nil {
		t.Fatal(err)
	}
	blob.SetQuotaHook(func(stage string) {
		if stage == cfg.Stage {
			fmt.Println("STAGE " + stage)
			time.Sleep(time.Hour)
		}
	})
	tctx := tenant.NewContext(ctx, tenant.MustParseID(cfg.Tenant))
	v, err := b.For(tctx)
	if err != nil {
		t.Fatal(err)
	}
	err = v.WriteAll(tctx, cfg.Key, make([]byte, cfg.Size), nil)
	t.Fatalf("the write ended (%v) instead of stopping at %s", err, cfg.Stage)
}
