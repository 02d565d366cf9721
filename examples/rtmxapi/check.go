package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// client calls the service as one member of a tenant.
type client struct {
	base   string
	tenant tenant.ID
	token  string
}

// answer is a response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(a.body)) }

// call sends method path (under /t/<tenant>) with body of type ct.
func (c client) call(ctx context.Context, method, path, ct string, body []byte, header ...string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/t/"+c.tenant.String()+path, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// expect calls and fails unless the answer has status want.
func (c client) expect(ctx context.Context, want int, method, path, ct string, body []byte, header ...string) (answer, error) {
	a, err := c.call(ctx, method, path, ct, body, header...)
	if err == nil && a.status != want {
		err = fmt.Errorf("%s %s as %s: want %d, got %s", method, path, c.tenant, want, a)
	}
	return a, err
}

// check calls every kind of route of the service at base once, as a
// client of each tenant, and checks the answers: what `go run
// ./examples/rtmxapi -check` prints, and what its test runs.
func check(ctx context.Context, out io.Writer, base string, a *app) error {
	ids := a.env.tenants
	if len(ids) < 2 {
		return errors.New("check: needs two tenants")
	}
	as := func(id tenant.ID, role string) (client, error) {
		tok, err := a.token(id, role)
		return client{base: base, tenant: id, token: tok}, err
	}
	acme, err := as(ids[0], authz.RoleEditor)
	if err != nil {
		return err
	}
	viewer, err := as(ids[0], authz.RoleViewer)
	if err != nil {
		return err
	}
	owner, err := as(ids[0], authz.RoleOwner)
	if err != nil {
		return err
	}
	globex, err := as(ids[1], authz.RoleEditor)
	if err != nil {
		return err
	}
	ok := func(format string, args ...any) { fmt.Fprintf(out, "ok  "+format+"\n", args...) }
	fmt.Fprintf(out, "\ncheck: every kind of route, as %s and %s\n", ids[0], ids[1])

	// The feed, joined first, gets every change after.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	feed, err := dialFeed(wctx, base+"/t/"+ids[0].String()+"/ws", viewer.token)
	if err != nil {
		return err
	}
	defer feed.CloseNow()
	next := func(wantType string) (map[string]any, error) {
		_, msg, err := feed.Read(wctx)
		if err != nil {
			return nil, fmt.Errorf("feed: %w", err)
		}
		var m struct {
			Op   string         `json:"op"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(msg, &m); err != nil || m.Op != "message" || m.Data["type"] != wantType {
			return nil, fmt.Errorf("feed: want a %s message, got %s", wantType, msg)
		}
		return m.Data, nil
	}
	ok("%s's viewer joined the feed of changes", ids[0])

	created := `{"req_id":"REQ-API-001","category":"API","requirement_text":"The API lists requirements","status":"MISSING","phase":1}`
	ans, err := acme.expect(ctx, http.StatusCreated, "POST", "/requirements", "application/json", []byte(created))
	if err != nil {
		return err
	}
	if ans.header.Get("ETag") != `"1"` {
		return fmt.Errorf("create: ETag %q, want \"1\"", ans.header.Get("ETag"))
	}
	if _, err := next("requirement.created"); err != nil {
		return err
	}
	ok("an editor of %s created REQ-API-001 (version 1), and the feed told", ids[0])

	if _, err := viewer.expect(ctx, http.StatusForbidden, "POST", "/requirements", "application/json", []byte(strings.Replace(created, "001", "002", 1))); err != nil {
		return err
	}
	ok("a viewer may not create: 403")

	ans, err = acme.expect(ctx, http.StatusUnprocessableEntity, "POST", "/requirements", "application/json",
		[]byte(`{"req_id":"req-1","category":"API","requirement_text":"x","status":"DONE"}`))
	if err != nil {
		return err
	}
	if !bytes.Contains(ans.body, []byte(`"field":"req_id"`)) || !bytes.Contains(ans.body, []byte(`"field":"status"`)) {
		return fmt.Errorf("create of an invalid requirement: the answer names not req_id and status: %s", ans)
	}
	ok("an invalid requirement is refused, naming each field and its rule: 422")

	cross := client{base: base, tenant: ids[0], token: globex.token}
	if _, err := cross.expect(ctx, http.StatusForbidden, "GET", "/requirements/REQ-API-001", "", nil); err != nil {
		return err
	}
	ans, err = globex.expect(ctx, http.StatusOK, "GET", "/requirements", "", nil)
	if err != nil {
		return err
	}
	if bytes.Contains(ans.body, []byte("REQ-API-001")) {
		return fmt.Errorf("%s sees %s's requirement: %s", ids[1], ids[0], ans)
	}
	ok("%s's token on %s's path: 403; %s's own list has none of %s's", ids[1], ids[0], ids[1], ids[0])

	updated := strings.Replace(created, `"MISSING"`, `"PARTIAL"`, 1)
	if _, err := acme.expect(ctx, http.StatusOK, "PUT", "/requirements/REQ-API-001", "application/json", []byte(updated), "If-Match", `"1"`); err != nil {
		return err
	}
	if _, err := next("requirement.updated"); err != nil {
		return err
	}
	if _, err := acme.expect(ctx, http.StatusPreconditionFailed, "PUT", "/requirements/REQ-API-001", "application/json", []byte(created), "If-Match", `"1"`); err != nil {
		return err
	}
	ok("an update of version 1 made version 2; another update of version 1 is refused: 412")

	if _, err := acme.expect(ctx, http.StatusOK, "POST", "/import", "text/csv", sampleCSV); err != nil {
		return err
	}
	if _, err := next("requirements.imported"); err != nil {
		return err
	}
	bad := bytes.Replace(sampleCSV, []byte(",PARTIAL,"), []byte(",DONE,"), 1)
	bad = bytes.Replace(bad, []byte("Implement range processing"), []byte("Changed by a refused import"), 1)
	ans, err = acme.expect(ctx, http.StatusUnprocessableEntity, "POST", "/import", "text/csv", bad)
	if err != nil {
		return err
	}
	if !bytes.Contains(ans.body, []byte(`row 2 (line 3), column status`)) {
		return fmt.Errorf("a refused import does not name row 2 and column status: %s", ans)
	}
	ans, err = acme.expect(ctx, http.StatusOK, "GET", "/export", "", nil)
	if err != nil {
		return err
	}
	if bytes.Contains(ans.body, []byte("Changed by a refused import")) || !bytes.Contains(ans.body, []byte("REQ-UI-010")) {
		return fmt.Errorf("export after a refused import: %s", ans)
	}
	ok("an RTMX database.csv imported (3 rows); one with a bad status in row 2 refused naming row and column, nothing changed")

	content := []byte("attachment of " + ids[0].String() + ": the test plan\n")
	if _, err := acme.expect(ctx, http.StatusCreated, "PUT", "/requirements/REQ-API-001/attachments/plan.txt", "text/plain", content); err != nil {
		return err
	}
	if _, err := next("attachment.uploaded"); err != nil {
		return err
	}
	ans, err = viewer.expect(ctx, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments/plan.txt", "", nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(ans.body, content) {
		return fmt.Errorf("attachment read back %q, want %q", ans.body, content)
	}
	clear, err := findInFiles(filepath.Join(a.env.dir, "objects"), content)
	if err != nil {
		return err
	}
	if clear != "" {
		return fmt.Errorf("the attachment is stored in the clear in %s", clear)
	}
	if _, err := acme.expect(ctx, http.StatusBadRequest, "PUT", "/requirements/REQ-API-001/attachments/%2e%2e", "text/plain", content); err != nil {
		return err
	}
	if _, err := acme.expect(ctx, http.StatusBadRequest, "PUT", "/requirements/REQ-API-001/attachments/a%5Cb", "text/plain", content); err != nil {
		return err
	}
	big := make([]byte, a.svc.cfg.MaxAttachment+1)
	if _, err := acme.expect(ctx, http.StatusRequestEntityTooLarge, "PUT", "/requirements/REQ-API-001/attachments/big.bin", "application/octet-stream", big); err != nil {
		return err
	}
	ok("an attachment uploaded, stored encrypted, read back; a bad name refused: 400; one over %d bytes: 413", a.svc.cfg.MaxAttachment)

	if _, err := acme.expect(ctx, http.StatusForbidden, "GET", "/audit/verify", "", nil); err != nil {
		return err
	}
	ans, err = owner.expect(ctx, http.StatusOK, "GET", "/audit/verify", "", nil)
	if err != nil {
		return err
	}
	var rep struct {
		Verified bool  `json:"verified"`
		Entries  int64 `json:"entries"`
	}
	if err := json.Unmarshal(ans.body, &rep); err != nil || !rep.Verified || rep.Entries < 7 {
		return fmt.Errorf("audit verify: %s", ans)
	}
	ok("the audit log of %s holds an entry per change (%d) and verifies; only an owner reads it", ids[0], rep.Entries)

	if _, err := acme.expect(ctx, http.StatusNoContent, "DELETE", "/requirements/REQ-API-001", "", nil, "If-Match", `"2"`); err != nil {
		return err
	}
	if _, err := next("requirement.deleted"); err != nil {
		return err
	}
	if _, err := viewer.expect(ctx, http.StatusNotFound, "GET", "/requirements/REQ-API-001/attachments/plan.txt", "", nil); err != nil {
		return err
	}
	ok("REQ-API-001 deleted with its attachment, and the feed told")
	fmt.Fprintln(out, "check passed")
	return nil
}

// findInFiles returns the first file under dir that holds b, or "".
func findInFiles(dir string, b []byte) (string, error) {
	var found string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		data, err := os.ReadFile(path)
		if err == nil && bytes.Contains(data, b) {
			found = path
		}
		return err
	})
	return found, err
}
