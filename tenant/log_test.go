package tenant_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// newJSONLogger returns a logger whose handler is NewLogHandler over a JSON
// handler writing into the returned buffer.
func newJSONLogger(level slog.Level) (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	h := tenant.NewLogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
	return slog.New(h), &buf
}

// jsonLines decodes every line of buf.
func jsonLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func oneLine(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	lines := jsonLines(t, buf)
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1: %q", len(lines), buf.String())
	}
	return lines[0]
}

var testTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

var tenantCtx = tenant.NewContext(context.Background(), tenant.MustParseID("abc123"))

func TestLogHandlerAddsTenant(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelInfo)
	log.InfoContext(tenantCtx, "hello", "k", "v")
	line := oneLine(t, buf)
	if line[tenant.LogKey] != "abc123" {
		t.Errorf("tenant_id = %v, want abc123 in %v", line[tenant.LogKey], line)
	}
	if line["k"] != "v" || line["msg"] != "hello" {
		t.Errorf("record attributes lost: %v", line)
	}
	if tenant.LogKey != "tenant_id" {
		t.Errorf("LogKey = %q, want tenant_id", tenant.LogKey)
	}
	if !strings.Contains(buf.String(), `"tenant_id":"abc123"`) {
		t.Errorf("line %q does not contain \"tenant_id\":\"abc123\"", buf.String())
	}
}

func TestLogHandlerLogAttrs(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelInfo)
	log.LogAttrs(tenantCtx, slog.LevelWarn, "m", slog.Int("n", 1))
	if got := oneLine(t, buf)[tenant.LogKey]; got != "abc123" {
		t.Errorf("tenant_id = %v, want abc123", got)
	}
}

func TestLogHandlerWithoutTenant(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelInfo)
	log.InfoContext(context.Background(), "no tenant")
	log.Info("no context")
	log.InfoContext(tenant.NewContext(tenantCtx, tenant.ID{}), "cleared")
	lines := jsonLines(t, buf)
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3", len(lines))
	}
	for _, line := range lines {
		if v, ok := line[tenant.LogKey]; ok {
			t.Errorf("record %q has tenant_id %v without a tenant in its context", line["msg"], v)
		}
	}
}

func TestLogHandlerEnabled(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelWarn)
	if log.Enabled(tenantCtx, slog.LevelInfo) {
		t.Error("Info enabled under a Warn handler")
	}
	if !log.Enabled(tenantCtx, slog.LevelError) {
		t.Error("Error disabled under a Warn handler")
	}
	log.InfoContext(tenantCtx, "dropped")
	log.ErrorContext(tenantCtx, "kept")
	if got := oneLine(t, buf)["msg"]; got != "kept" {
		t.Errorf("logged %v, want only the error record", got)
	}
}

func TestLogHandlerWithAttrs(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelInfo)
	log.With("svc", "api").With(slog.Int("n", 7)).InfoContext(tenantCtx, "m")
	line := oneLine(t, buf)
	if line[tenant.LogKey] != "abc123" || line["svc"] != "api" || line["n"] != float64(7) {
		t.Errorf("With lost the wrapping or the attributes: %v", line)
	}
}

func TestLogHandlerWithGroup(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelInfo)
	log.With("svc", "api").WithGroup("req").InfoContext(tenantCtx, "m", "path", "/x")
	line := oneLine(t, buf)
	if line["svc"] != "api" {
		t.Errorf("attribute before the group lost: %v", line)
	}
	group, ok := line["req"].(map[string]any)
	if !ok {
		t.Fatalf("no group req in %v", line)
	}
	// As documented, the tenant is a record attribute and so lands in the
	// open group, like the record's other attributes.
	if group[tenant.LogKey] != "abc123" || group["path"] != "/x" {
		t.Errorf("group = %v, want tenant_id and path inside it", group)
	}
	if _, ok := line[tenant.LogKey]; ok {
		t.Errorf("tenant_id is also at the top level: %v", line)
	}
}

func TestLogHandlerWrapsOnce(t *testing.T) {
	var buf bytes.Buffer
	base := slog.NewJSONHandler(&buf, nil)
	once := tenant.NewLogHandler(base)
	for name, h := range map[string]slog.Handler{
		"twice":           tenant.NewLogHandler(once),
		"thrice":          tenant.NewLogHandler(tenant.NewLogHandler(once)),
		"after WithAttrs": tenant.NewLogHandler(once.WithAttrs([]slog.Attr{slog.String("a", "b")})),
		"after WithGroup": tenant.NewLogHandler(once.WithGroup("g")),
	} {
		buf.Reset()
		slog.New(h).InfoContext(tenantCtx, "m")
		if n := strings.Count(buf.String(), `"tenant_id"`); n != 1 {
			t.Errorf("%s: tenant_id appears %d times in %q, want once", name, n, buf.String())
		}
	}
}

func TestLogHandlerDoesNotChangeCallerRecord(t *testing.T) {
	var got []slog.Record
	h := tenant.NewLogHandler(recordingHandler{&got})
	r := slog.NewRecord(testTime, slog.LevelInfo, "m", 0)
	for i := range 8 { // more than fit inline in a Record
		r.AddAttrs(slog.Int(fmt.Sprint("a", i), i))
	}
	if err := h.Handle(tenantCtx, r); err != nil {
		t.Fatal(err)
	}
	if r.NumAttrs() != 8 {
		t.Errorf("caller's record has %d attributes after Handle, want 8", r.NumAttrs())
	}
	// The caller may go on using its record: slog reports a handler that
	// modified a shared copy without Record.Clone with a !BUG attribute.
	r.AddAttrs(slog.String("after", "x"))
	var mine []string
	r.Attrs(func(a slog.Attr) bool { mine = append(mine, a.Key); return true })
	if n := len(mine); n != 9 || mine[8] != "after" {
		t.Errorf("caller's record has attributes %v after Handle, want a0..a7 and after", mine)
	}
	if len(got) != 1 {
		t.Fatalf("next handler saw %d records", len(got))
	}
	var keys []string
	got[0].Attrs(func(a slog.Attr) bool { keys = append(keys, a.Key+"="+a.Value.String()); return true })
	if n := len(keys); n != 9 || keys[8] != "tenant_id=abc123" {
		t.Errorf("next handler saw attributes %v, want a0..a7 and tenant_id=abc123", keys)
	}
}

// recordingHandler keeps every record it handles.
type recordingHandler struct{ got *[]slog.Record }

func (recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	*h.got = append(*h.got, r)
	return nil
}
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordingHandler) WithGroup(string) slog.Handler      { return h }

func TestLogHandlerConcurrentTenants(t *testing.T) {
	log, buf := newJSONLogger(slog.LevelInfo)
	log = log.With("svc", "worker")
	const workers, perWorker = 32, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := tenant.NewContext(context.Background(), tenant.MustParseID(fmt.Sprintf("t%d", w)))
			for i := range perWorker {
				log.InfoContext(ctx, "tick", "worker", w, "i", i)
			}
		})
	}
	wg.Wait()
	lines := jsonLines(t, buf)
	if len(lines) != workers*perWorker {
		t.Fatalf("got %d lines, want %d", len(lines), workers*perWorker)
	}
	seen := map[string]int{}
	for _, line := range lines {
		w := int(line["worker"].(float64))
		want := fmt.Sprintf("t%d", w)
		if line[tenant.LogKey] != want {
			t.Fatalf("worker %d logged tenant_id %v, want %s", w, line[tenant.LogKey], want)
		}
		seen[want]++
	}
	for w := range workers {
		if n := seen[fmt.Sprintf("t%d", w)]; n != perWorker {
			t.Errorf("tenant t%d has %d lines, want %d", w, n, perWorker)
		}
	}
}
