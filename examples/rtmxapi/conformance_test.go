package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant/tenanttest"
)

// TestIsolationConformance runs tenancy's isolation conformance suite
// against the service, every check on (Strict): each route that touches
// tenant data replayed with the other tenant's token, path and values,
// the database, the objects, the feed, the keys, the audit log and the
// rate limit.
//
// rtmx:req REQ-TEN-019
func TestIsolationConformance(t *testing.T) {
	f := newFixture(t, "cf", nil)
	var seq atomic.Int64 // makes every planted or created requirement ID new
	// sameID is the ID of the first requirement planted in each tenant,
	// so that the suite also checks one ID that both tenants hold at once,
	// each row with its own canary and attachment under the same key.
	const sameID = "REQ-SAME-001"
	var (
		mu       sync.Mutex // guards haveSame
		haveSame = map[string]bool{}
	)
	tenants := make([]tenanttest.Tenant, len(f.env.tenants))
	for i, id := range f.env.tenants {
		tenants[i] = tenanttest.Tenant{ID: id, Token: func(role string) (string, error) {
			if role == "" {
				role = authz.RoleOwner
			}
			return f.app.token(id, role)
		}}
	}
	plant := func(ctx context.Context, tn tenanttest.Tenant, canary string) (tenanttest.Planted, error) {
		id := fmt.Sprintf("REQ-CANARY-%d", seq.Add(1))
		mu.Lock()
		if !haveSame[tn.ID.String()] {
			haveSame[tn.ID.String()] = true
			id = sameID
		}
		mu.Unlock()
		tok, err := tn.Token(authz.RoleEditor)
		if err != nil {
			return tenanttest.Planted{}, err
		}
		c := client{base: f.srv.URL, tenant: tn.ID, token: tok}
		body, err := json.Marshal(Requirement{ReqID: id, Category: "CANARY", RequirementText: canary, Status: "MISSING"})
		if err != nil {
			return tenanttest.Planted{}, err
		}
		if _, err := c.expect(ctx, http.StatusCreated, "POST", "/requirements", "application/json", body); err != nil {
			return tenanttest.Planted{}, err
		}
		if _, err := c.expect(ctx, http.StatusCreated, "PUT", "/requirements/"+id+"/attachments/canary.txt", "text/plain", []byte(canary)); err != nil {
			return tenanttest.Planted{}, err
		}
		return tenanttest.Planted{
			Values:  map[string]string{"req": id, "name": "canary.txt"},
			Objects: []string{attachmentPrefix(id) + "canary.txt"},
		}, nil
	}
	newReq := func(tenanttest.Planted) (string, []byte) {
		b, _ := json.Marshal(Requirement{ReqID: fmt.Sprintf("REQ-NEW-%d", seq.Add(1)), Category: "NEW", RequirementText: "made by the suite", Status: "MISSING"})
		return "application/json", b
	}
	update := func(p tenanttest.Planted) (string, []byte) {
		b, _ := json.Marshal(updateBody{Requirement: Requirement{ReqID: p.Values["req"], Category: "CANARY", RequirementText: "updated by the suite", Status: "PARTIAL"}, Version: new(int64(1))})
		return "application/json", b
	}
	importCSV := func(tenanttest.Planted) (string, []byte) {
		return "text/csv", fmt.Appendf(nil, "req_id,category,requirement_text,status\nREQ-IMPORT-%d,IMPORT,imported by the suite,MISSING\n", seq.Add(1))
	}
	attach := func(tenanttest.Planted) (string, []byte) { return "text/plain", []byte("uploaded by the suite") }
	const viewer, editor, owner = authz.RoleViewer, authz.RoleEditor, authz.RoleOwner
	req := "/t/{tenant}/requirements/{req}"
	att := req + "/attachments/{name}"
	h := &tenanttest.Harness{
		Tenants: tenants,
		Handler: f.app.handler,
		Plant:   plant,
		Routes: []tenanttest.Route{
			{Method: "GET", Path: req, Role: viewer, Reads: true}, // the first Reads route reads the planted row back
			{Method: "GET", Path: "/t/{tenant}/requirements", Role: viewer, Reads: true},
			{Method: "GET", Path: "/t/{tenant}/export", Role: viewer, Reads: true},
			{Method: "GET", Path: req + "/attachments", Role: viewer},
			{Method: "GET", Path: att, Role: viewer, Reads: true},
			{Method: "GET", Path: "/t/{tenant}/audit", Role: owner, Reads: true},
			{Method: "GET", Path: "/t/{tenant}/audit/verify", Role: owner},
			{Method: "POST", Path: "/t/{tenant}/requirements", Role: editor, Body: newReq},
			{Method: "PUT", Path: req, Role: editor, Body: update},
			{Method: "POST", Path: "/t/{tenant}/import", Role: editor, Body: importCSV},
			{Method: "PUT", Path: att, Role: editor, Body: attach},
			{Method: "DELETE", Path: att, Role: editor},
			{Method: "DELETE", Path: req, Role: editor},
		},
		WebSocket: &tenanttest.WebSocket{
			Path:   "/t/{tenant}/ws",
			Join:   []string{joinFeed},
			Joined: func(_ int, msg []byte) bool { return string(msg) == joinedFeed },
		},
		DB:      f.env.db,
		Tables:  []string{"requirements", "audit_log"},
		Buckets: f.env.buckets,
		Raw:     f.env.raw,
		Keys:    f.env.keys,
		Audit:   f.env.audit,
		Quota:   &tenanttest.Quota{Route: tenanttest.Route{Method: "GET", Path: req, Role: viewer}, Requests: 2000},
		Strict:  true,
		Timeout: 2 * time.Minute,
	}
	tenanttest.Run(t, h)
	for _, id := range f.env.tenants {
		assert.Contains(t, f.rows(t, id), sameID, "tenant %s holds the ID both tenants hold", id)
	}
}
