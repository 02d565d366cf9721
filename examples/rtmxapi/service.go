package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ws"
	tblob "github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/store"
)

// feedRoom is the room of each tenant's WebSocket feed of changes.
const feedRoom = "changes"

// Limits of request bodies.
const (
	maxJSONBody      = 64 << 10
	defaultListLimit = 500
	maxListLimit     = 5000
	maxContentType   = 255
)

// serviceConfig is what the service runs on. Every field is required.
type serviceConfig struct {
	DB      *store.DB
	Audit   *audit.Log
	Buckets *tblob.Buckets
	Hub     *ws.Hub
	MW      *authz.Middleware
	// MaxAttachment is the largest attachment, in bytes.
	MaxAttachment int64
	// Logger receives the errors answered with 500 (nil discards them).
	Logger *slog.Logger
}

// service is the RTMX requirements API: requirements, their import and
// export, attachments, the audit log and the feed of changes, each under
// /t/{tenant}/ and for the token's tenant only.
type service struct {
	cfg  serviceConfig
	repo repo
	log  *slog.Logger
}

func newService(cfg serviceConfig) (*service, error) {
	if cfg.DB == nil || cfg.Audit == nil || cfg.Buckets == nil || cfg.Hub == nil || cfg.MW == nil {
		return nil, errors.New("rtmxapi: service: DB, Audit, Buckets, Hub and MW are required")
	}
	if cfg.MaxAttachment <= 0 {
		return nil, errors.New("rtmxapi: service: MaxAttachment must be more than 0")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &service{cfg: cfg, repo: repo{db: cfg.DB}, log: log}, nil
}

// route is one route of the service and the permission it needs.
type route struct {
	pattern string
	perm    string
	handler http.HandlerFunc
}

func (s *service) routes() []route {
	return []route{
		{"GET /t/{tenant}/requirements", authz.PermRead, s.list},
		{"POST /t/{tenant}/requirements", authz.PermWrite, s.create},
		{"GET /t/{tenant}/requirements/{req}", authz.PermRead, s.get},
		{"PUT /t/{tenant}/requirements/{req}", authz.PermWrite, s.update},
		{"DELETE /t/{tenant}/requirements/{req}", authz.PermWrite, s.remove},
		{"POST /t/{tenant}/import", authz.PermWrite, s.importCSV},
		{"GET /t/{tenant}/export", authz.PermRead, s.exportCSV},
		{"GET /t/{tenant}/requirements/{req}/attachments", authz.PermRead, s.listAttachments},
		{"PUT /t/{tenant}/requirements/{req}/attachments/{name}", authz.PermWrite, s.upload},
		{"GET /t/{tenant}/requirements/{req}/attachments/{name}", authz.PermRead, s.download},
		{"DELETE /t/{tenant}/requirements/{req}/attachments/{name}", authz.PermWrite, s.deleteAttachment},
		{"GET /t/{tenant}/audit", authz.PermManage, s.auditExport},
		{"GET /t/{tenant}/audit/verify", authz.PermManage, s.auditVerify},
	}
}

// Handler returns the service's HTTP handler: every route behind the
// authz middleware (token, tenant of the path the token's, tenant active,
// role, rate limit) and the permission it needs.
func (s *service) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, s.cfg.MW.Handler(authz.RequirePermission(rt.perm)(rt.handler)))
	}
	// The feed: a bearer token in the Authorization header, or, for
	// browsers, in the subprotocol list.
	mux.Handle("GET /t/{tenant}/ws", ws.Authenticate(s.cfg.MW, authz.RequirePermission(authz.PermRead)(s.cfg.Hub)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, http.StatusNotFound, "not_found", "No such route: see the package documentation of examples/rtmxapi.", nil)
	})
	return mux
}

// problem answers with an RFC 9457 problem.
func problem(w http.ResponseWriter, status int, code, detail string, errs any) {
	p := map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "code": code, "detail": detail}
	if errs != nil {
		p["errors"] = errs
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

// internal answers 500 and logs err, which the client does not see.
func (s *service) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.ErrorContext(r.Context(), "rtmxapi: "+what, "err", err, "method", r.Method, "path", r.URL.Path)
	problem(w, http.StatusInternalServerError, "internal", "The request failed; the service logged why.", nil)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// reqID reads and checks the {req} of the path.
func reqID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("req")
	if !reqIDPattern.MatchString(id) || len(id) > maxReqID {
		problem(w, http.StatusNotFound, "not_found", "No requirement has this ID: an ID matches REQ-[A-Z]+-[0-9]+.", nil)
		return "", false
	}
	return id, true
}

// decode reads a JSON object of at most maxJSONBody bytes into v,
// refusing unknown fields, and answers the request if it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		problem(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "The body must be JSON (Content-Type: application/json).", nil)
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return true
	}
	var (
		maxErr  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		fields  []*FieldError
	)
	detail := "The body is not a JSON object of a requirement's fields: "
	switch {
	case errors.As(err, &maxErr):
		problem(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("The body is over %d bytes.", maxJSONBody), nil)
		return false
	case errors.As(err, &typeErr) && typeErr.Field != "":
		fields = []*FieldError{{Field: typeErr.Field, Rule: "must be a JSON " + jsonKind(typeErr.Type)}}
		detail += "field " + typeErr.Field + " must be a JSON " + jsonKind(typeErr.Type) + "."
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		fields = []*FieldError{{Field: printable(name), Rule: "is not a field of a requirement (" + strings.Join(Columns, ", ") + "; and version, in a PUT)"}}
		detail += "unknown field " + printable(name) + "."
	default:
		detail += err.Error() + "."
	}
	problem(w, http.StatusBadRequest, "bad_request", detail, fields)
	return false
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "array of strings"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "number"
	default:
		return t.String()
	}
}

// invalid answers 422 for a requirement that breaks rules.
func invalid(w http.ResponseWriter, err error) {
	var ve *ValidationError
	if errors.As(err, &ve) {
		problem(w, http.StatusUnprocessableEntity, "invalid_requirement", ve.Error(), ve.Fields)
		return
	}
	problem(w, http.StatusUnprocessableEntity, "invalid_requirement", err.Error(), nil)
}

// actor returns who the request speaks for.
func actor(r *http.Request) string {
	if p, ok := authz.FromContext(r.Context()); ok {
		return p.Subject()
	}
	return "unknown"
}

// record appends one audit entry per event of a change made by r, in one
// transaction of the tenant's audit log.
func (s *service) record(r *http.Request, events ...audit.Event) error {
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ip = ap.Addr().Unmap().WithZone("")
	}
	ua := r.UserAgent()
	if len(ua) > audit.MaxUserAgent || hasControl(ua, oneLine) {
		ua = ""
	}
	for i := range events {
		events[i].Actor = actor(r)
		events[i].Outcome = audit.OutcomeSuccess
		events[i].SourceIP, events[i].UserAgent = ip, ua
	}
	_, err := s.cfg.Audit.Append(r.Context(), events...)
	return err
}

// publish sends a change to the tenant's feed. A feed nobody listens to
// is not an error; one that fails is logged.
func (s *service) publish(ctx context.Context, change map[string]any) {
	room, err := ws.NewRoom(ctx, feedRoom)
	if err == nil {
		_, err = s.cfg.Hub.Publish(ctx, room, change)
	}
	if err != nil {
		s.log.WarnContext(ctx, "rtmxapi: publish a change", "err", err)
	}
}

// changed answers a change that is made: it is audited, published to the
// tenant's feed, and answered with status and body. A change made whose
// audit entry could not be written is answered 500: it stays made, the
// service logs it, and its client should not take it for done silently.
func (s *service) changed(w http.ResponseWriter, r *http.Request, status int, body any, change map[string]any, events ...audit.Event) {
	if err := s.record(r, events...); err != nil {
		s.internal(w, r, "audit a change that was made", err)
		return
	}
	change["actor"] = actor(r)
	change["at"] = time.Now().UTC().Format(time.RFC3339Nano)
	s.publish(r.Context(), change)
	if body == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, body)
}

// details are the audit details of a change to a requirement: the fields
// changed and their new values, or, past a size an entry takes, their
// names only.
func details(version int64, before *Requirement, after *Requirement) map[string]any {
	var old map[string]any
	if before != nil {
		old = fields(before)
	}
	changed := map[string]any{}
	for k, v := range fields(after) {
		if o, ok := old[k]; before == nil && !isEmpty(v) || before != nil && (!ok || !reflect.DeepEqual(o, v)) {
			changed[k] = v
		}
	}
	d := map[string]any{"version": version, "fields": changed}
	if b, err := json.Marshal(d); err != nil || len(b) > audit.MaxDetails/2 {
		names := make([]string, 0, len(changed))
		for k := range changed {
			names = append(names, k)
		}
		slices.Sort(names)
		d = map[string]any{"version": version, "changed": names}
	}
	return d
}

func fields(r *Requirement) map[string]any {
	b, _ := json.Marshal(r) // a struct of strings and numbers
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	}
	return false
}

// list answers GET /t/{tenant}/requirements[?status=S][&after=ID][&limit=N].
func (s *service) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status, after := q.Get("status"), q.Get("after")
	if status != "" && !slices.Contains(Statuses, status) {
		problem(w, http.StatusBadRequest, "bad_request", "Parameter status must be one of "+strings.Join(Statuses, ", ")+".", []*FieldError{{Field: "status", Rule: "must be one of " + strings.Join(Statuses, ", ")}})
		return
	}
	if after != "" && !reqIDPattern.MatchString(after) {
		problem(w, http.StatusBadRequest, "bad_request", "Parameter after must be a requirement ID.", []*FieldError{{Field: "after", Rule: "must match REQ-[A-Z]+-[0-9]+"}})
		return
	}
	limit := defaultListLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxListLimit {
			problem(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("Parameter limit must be an integer from 1 to %d.", maxListLimit), []*FieldError{{Field: "limit", Rule: fmt.Sprintf("must be an integer from 1 to %d", maxListLimit)}})
			return
		}
		limit = n
	}
	reqs, err := s.repo.list(r.Context(), status, after, limit+1)
	if err != nil {
		s.internal(w, r, "list requirements", err)
		return
	}
	body := map[string]any{"requirements": reqs}
	if len(reqs) > limit {
		body["requirements"], body["next_after"] = reqs[:limit], reqs[limit-1].ReqID
	}
	writeJSON(w, http.StatusOK, body)
}

// create answers POST /t/{tenant}/requirements.
func (s *service) create(w http.ResponseWriter, r *http.Request) {
	var req Requirement
	if !decode(w, r, &req) {
		return
	}
	req.Normalize()
	if err := req.Validate(); err != nil {
		invalid(w, err)
		return
	}
	st, err := s.repo.create(r.Context(), &req)
	switch {
	case errors.Is(err, errExists):
		problem(w, http.StatusConflict, "exists", "Requirement "+req.ReqID+" exists already: PUT it to change it.", []*FieldError{{Field: "req_id", Rule: "must be new: " + req.ReqID + " exists"}})
		return
	case err != nil:
		s.internal(w, r, "create a requirement", err)
		return
	}
	w.Header().Set("ETag", etag(st.Version))
	w.Header().Set("Location", r.URL.Path+"/"+st.ReqID)
	s.changed(w, r, http.StatusCreated, st,
		map[string]any{"type": "requirement.created", "req_id": st.ReqID, "version": st.Version, "requirement": st},
		audit.Event{Action: "requirement.create", Resource: st.ReqID, Details: details(st.Version, nil, &st.Requirement)})
}

// get answers GET /t/{tenant}/requirements/{req}.
func (s *service) get(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok {
		return
	}
	st, err := s.repo.get(r.Context(), id)
	switch {
	case errors.Is(err, errNotFound):
		problem(w, http.StatusNotFound, "not_found", "No requirement "+id+".", nil)
		return
	case err != nil:
		s.internal(w, r, "get a requirement", err)
		return
	}
	w.Header().Set("ETag", etag(st.Version))
	writeJSON(w, http.StatusOK, st)
}

// updateBody is the body of PUT: every field of the requirement, and the
// version it replaces (or an If-Match header naming it).
type updateBody struct {
	Requirement
	Version *int64 `json:"version"`
}

// ifMatch returns the version of an If-Match header ("N", the ETag of
// GET), 0 if there is none, or false if it is not one.
func ifMatch(r *http.Request) (int64, bool) {
	h := r.Header.Get("If-Match")
	if h == "" {
		return 0, true
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	return v, err == nil && v > 0
}

// update answers PUT /t/{tenant}/requirements/{req}: the requirement is
// replaced if it is still at the version the client read (optimistic
// concurrency: a client that read an older version gets 412 and
// changes nothing).
func (s *service) update(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok {
		return
	}
	var body updateBody
	if !decode(w, r, &body) {
		return
	}
	hv, ok := ifMatch(r)
	switch {
	case !ok:
		problem(w, http.StatusBadRequest, "bad_request", `If-Match must be the requirement's ETag, a version such as "3".`, nil)
		return
	case body.Version != nil && hv != 0 && *body.Version != hv:
		problem(w, http.StatusBadRequest, "bad_request", "If-Match and the body's version differ.", []*FieldError{{Field: "version", Rule: "must be the version of If-Match"}})
		return
	case body.Version == nil && hv == 0:
		problem(w, http.StatusPreconditionRequired, "version_required", "Say which version you replace: the body's version, or If-Match with the ETag of GET.", []*FieldError{{Field: "version", Rule: "is required (or If-Match)"}})
		return
	}
	version := hv
	if body.Version != nil {
		version = *body.Version
	}
	req := body.Requirement
	if req.ReqID == "" {
		req.ReqID = id
	}
	req.Normalize()
	if err := req.Validate(); err != nil {
		invalid(w, err)
		return
	}
	if req.ReqID != id {
		problem(w, http.StatusUnprocessableEntity, "invalid_requirement", "field req_id: must be the path's requirement ID ("+id+"); an ID does not change.", []*FieldError{{Field: "req_id", Rule: "must be the path's requirement ID"}})
		return
	}
	before, after, err := s.repo.update(r.Context(), &req, version)
	switch {
	case errors.Is(err, errNotFound):
		problem(w, http.StatusNotFound, "not_found", "No requirement "+id+".", nil)
		return
	case errors.Is(err, errStale):
		w.Header().Set("ETag", etag(before.Version))
		problem(w, http.StatusPreconditionFailed, "version_mismatch",
			fmt.Sprintf("Requirement %s is at version %d, not %d: read it again and apply your change to it.", id, before.Version, version),
			[]*FieldError{{Field: "version", Rule: fmt.Sprintf("must be the current version (%d)", before.Version)}})
		return
	case err != nil:
		s.internal(w, r, "update a requirement", err)
		return
	}
	w.Header().Set("ETag", etag(after.Version))
	s.changed(w, r, http.StatusOK, after,
		map[string]any{"type": "requirement.updated", "req_id": id, "version": after.Version, "requirement": after},
		audit.Event{Action: "requirement.update", Resource: id, Details: details(after.Version, &before.Requirement, &after.Requirement)})
}

// remove answers DELETE /t/{tenant}/requirements/{req} (If-Match
// optional): the requirement and its attachments are deleted. The
// attachments are deleted in the transaction that deletes the row, before
// it commits: if one cannot be deleted the answer is 500 and the
// requirement stays (less the attachments deleted before the failure), so
// no object outlives its requirement to be inherited by a later one of
// the same ID.
func (s *service) remove(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok {
		return
	}
	version, ok := ifMatch(r)
	if !ok {
		problem(w, http.StatusBadRequest, "bad_request", `If-Match must be the requirement's ETag, a version such as "3".`, nil)
		return
	}
	removed := 0
	last, err := s.repo.remove(r.Context(), id, version, func(ctx context.Context) error {
		var err error
		if removed, err = s.deleteAttachments(ctx, id); err != nil {
			return fmt.Errorf("delete its attachments: %w", err)
		}
		return nil
	})
	switch {
	case errors.Is(err, errNotFound):
		problem(w, http.StatusNotFound, "not_found", "No requirement "+id+".", nil)
		return
	case errors.Is(err, errStale):
		w.Header().Set("ETag", etag(last))
		problem(w, http.StatusPreconditionFailed, "version_mismatch", fmt.Sprintf("Requirement %s is at version %d, not %d.", id, last, version), nil)
		return
	case err != nil:
		s.internal(w, r, "delete a requirement", err)
		return
	}
	s.changed(w, r, http.StatusNoContent, nil,
		map[string]any{"type": "requirement.deleted", "req_id": id, "version": last},
		audit.Event{Action: "requirement.delete", Resource: id, Details: map[string]any{"version": last, "attachments_deleted": removed}})
}

// importCSV answers POST /t/{tenant}/import: an RTMX database.csv
// (Content-Type text/csv), whole, in one transaction. A row that breaks a
// rule refuses the import (422, naming the row and column) and changes
// nothing.
func (s *service) importCSV(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "text/csv" {
		problem(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "The body must be an RTMX database.csv (Content-Type: text/csv).", nil)
		return
	}
	reqs, err := ParseCSV(http.MaxBytesReader(w, r.Body, maxImportBytes))
	var (
		ie     *ImportError
		maxErr *http.MaxBytesError
	)
	switch {
	case errors.As(err, &maxErr):
		problem(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("An import is at most %d bytes.", maxImportBytes), nil)
		return
	case errors.As(err, &ie):
		problem(w, http.StatusUnprocessableEntity, "invalid_import", ie.Error()+"; nothing was imported.", []*ImportError{ie})
		return
	case err != nil:
		problem(w, http.StatusBadRequest, "bad_request", "The body could not be read.", nil)
		return
	}
	done, err := s.repo.upsert(r.Context(), reqs)
	if err != nil {
		s.internal(w, r, "import requirements", err)
		return
	}
	created, updated := []string{}, []string{}
	events := make([]audit.Event, 0, len(done)+1)
	for _, im := range done {
		action := "requirement.update"
		if im.Created {
			action = "requirement.create"
			created = append(created, im.ReqID)
		} else {
			updated = append(updated, im.ReqID)
		}
		events = append(events, audit.Event{Action: action, Resource: im.ReqID, Details: map[string]any{"version": im.Version, "via": "import"}})
	}
	summary := map[string]any{"rows": len(reqs), "created": len(created), "updated": len(updated), "unchanged": len(reqs) - len(done)}
	events = append(events, audit.Event{Action: "requirements.import", Resource: "import", Details: summary})
	body := map[string]any{"rows": len(reqs), "created": created, "updated": updated, "unchanged": len(reqs) - len(done)}
	change := map[string]any{"type": "requirements.imported", "created": created, "updated": updated}
	s.changed(w, r, http.StatusOK, body, change, events...)
}

// exportCSV answers GET /t/{tenant}/export with the tenant's
// requirements as an RTMX database.csv.
func (s *service) exportCSV(w http.ResponseWriter, r *http.Request) {
	var all []Requirement
	after := ""
	for {
		page, err := s.repo.list(r.Context(), "", after, maxListLimit)
		if err != nil {
			s.internal(w, r, "export requirements", err)
			return
		}
		for _, st := range page {
			all = append(all, st.Requirement)
		}
		if len(page) < maxListLimit {
			break
		}
		after = page[len(page)-1].ReqID
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, all); err != nil {
		s.internal(w, r, "export requirements", err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="database.csv"`)
	_, _ = w.Write(buf.Bytes())
}

// attachmentPrefix is where a requirement's attachments are kept in the
// tenant's bucket.
func attachmentPrefix(id string) string { return "requirements/" + id + "/" }

// attachmentName reads and checks the {name} of the path: one segment
// that the tenant bucket takes as a key.
func attachmentName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := tblob.ValidateKey(name); err != nil || strings.Contains(name, "/") || len(name) > tblob.MaxSegmentLen {
		rule := "must be one segment of an object key"
		var ke *tblob.KeyError
		if errors.As(err, &ke) {
			rule = string(ke.Rule)
		}
		problem(w, http.StatusBadRequest, "invalid_name", "The attachment's name is refused: "+rule+".", []*FieldError{{Field: "name", Rule: rule}})
		return "", false
	}
	return name, true
}

// requireRequirement answers 404 unless requirement id exists.
func (s *service) requireRequirement(w http.ResponseWriter, r *http.Request, id string) bool {
	ok, err := s.repo.exists(r.Context(), id)
	switch {
	case err != nil:
		s.internal(w, r, "look a requirement up", err)
		return false
	case !ok:
		problem(w, http.StatusNotFound, "not_found", "No requirement "+id+".", nil)
		return false
	}
	return true
}

// attachment describes one attachment.
type attachment struct {
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type,omitempty"`
	SHA256      string    `json:"sha256,omitempty"`
	Modified    time.Time `json:"modified"`
}

// upload answers PUT /t/{tenant}/requirements/{req}/attachments/{name}:
// the body, at most MaxAttachment bytes, is stored encrypted under the
// tenant's key in the tenant's prefix, replacing an attachment of the
// same name.
func (s *service) upload(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok {
		return
	}
	name, ok := attachmentName(w, r)
	if !ok || !s.requireRequirement(w, r, id) {
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil || len(ct) > maxContentType {
		problem(w, http.StatusBadRequest, "bad_request", "Content-Type must be a media type of at most 255 bytes.", nil)
		return
	}
	if r.ContentLength > s.cfg.MaxAttachment {
		problem(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("An attachment is at most %d bytes.", s.cfg.MaxAttachment), nil)
		return
	}
	bucket, ok := s.bucket(w, r)
	if !ok {
		return
	}
	defer bucket.Close()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	key := attachmentPrefix(id) + name
	bw, err := bucket.NewWriter(ctx, key, &blob.WriterOptions{ContentType: ct})
	if err != nil {
		s.internal(w, r, "store an attachment", err)
		return
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(bw, sum), http.MaxBytesReader(w, r.Body, s.cfg.MaxAttachment))
	if err != nil {
		cancel() // a writer closed after its context ends stores nothing
		_ = bw.Close()
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			problem(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("An attachment is at most %d bytes.", s.cfg.MaxAttachment), nil)
			return
		}
		problem(w, http.StatusBadRequest, "bad_request", "The body could not be read; nothing was stored.", nil)
		return
	}
	if err := bw.Close(); err != nil {
		if errors.Is(err, tblob.ErrQuotaExceeded) {
			problem(w, http.StatusRequestEntityTooLarge, "quota_exceeded", "The tenant's object storage quota is used up; nothing was stored.", nil)
			return
		}
		s.internal(w, r, "store an attachment", err)
		return
	}
	a := attachment{Name: name, Size: n, ContentType: ct, SHA256: hex.EncodeToString(sum.Sum(nil)), Modified: time.Now().UTC()}
	s.changed(w, r, http.StatusCreated, a,
		map[string]any{"type": "attachment.uploaded", "req_id": id, "attachment": a},
		audit.Event{Action: "attachment.upload", Resource: key, Details: map[string]any{"size": n, "sha256": a.SHA256, "content_type": ct}})
}

// bucket opens the request's tenant's bucket view, answering 500 if it
// cannot; the caller closes it.
func (s *service) bucket(w http.ResponseWriter, r *http.Request) (*blob.Bucket, bool) {
	bucket, err := s.cfg.Buckets.For(r.Context())
	if err != nil {
		s.internal(w, r, "open the tenant's bucket", err)
		return nil, false
	}
	return bucket, true
}

// download answers GET /t/{tenant}/requirements/{req}/attachments/{name}.
func (s *service) download(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok {
		return
	}
	name, ok := attachmentName(w, r)
	if !ok {
		return
	}
	bucket, ok := s.bucket(w, r)
	if !ok {
		return
	}
	defer bucket.Close()
	br, err := bucket.NewReader(r.Context(), attachmentPrefix(id)+name, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		problem(w, http.StatusNotFound, "not_found", "Requirement "+id+" has no attachment of this name.", nil)
		return
	}
	if err != nil {
		s.internal(w, r, "read an attachment", err)
		return
	}
	defer br.Close()
	// Read whole (at most MaxAttachment bytes) before answering, so that
	// an object that does not decrypt, or is larger than an upload may
	// be, is a 500, not a cut-off 200.
	data, err := io.ReadAll(io.LimitReader(br, s.cfg.MaxAttachment+1))
	if err != nil {
		s.internal(w, r, "read an attachment", err)
		return
	}
	if int64(len(data)) > s.cfg.MaxAttachment {
		s.internal(w, r, "read an attachment", fmt.Errorf("object %s is larger than MaxAttachment (%d bytes)", attachmentPrefix(id)+name, s.cfg.MaxAttachment))
		return
	}
	w.Header().Set("Content-Type", br.ContentType())
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

// listAttachments answers GET /t/{tenant}/requirements/{req}/attachments.
func (s *service) listAttachments(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok || !s.requireRequirement(w, r, id) {
		return
	}
	bucket, ok := s.bucket(w, r)
	if !ok {
		return
	}
	defer bucket.Close()
	out := []attachment{}
	it := bucket.List(&blob.ListOptions{Prefix: attachmentPrefix(id)})
	for {
		obj, err := it.Next(r.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.internal(w, r, "list attachments", err)
			return
		}
		out = append(out, attachment{Name: strings.TrimPrefix(obj.Key, attachmentPrefix(id)), Size: obj.Size, Modified: obj.ModTime.UTC()})
	}
	writeJSON(w, http.StatusOK, map[string]any{"req_id": id, "attachments": out})
}

// deleteAttachment answers DELETE .../attachments/{name}.
func (s *service) deleteAttachment(w http.ResponseWriter, r *http.Request) {
	id, ok := reqID(w, r)
	if !ok {
		return
	}
	name, ok := attachmentName(w, r)
	if !ok {
		return
	}
	bucket, ok := s.bucket(w, r)
	if !ok {
		return
	}
	defer bucket.Close()
	key := attachmentPrefix(id) + name
	err := bucket.Delete(r.Context(), key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		problem(w, http.StatusNotFound, "not_found", "Requirement "+id+" has no attachment of this name.", nil)
		return
	}
	if err != nil {
		s.internal(w, r, "delete an attachment", err)
		return
	}
	s.changed(w, r, http.StatusNoContent, nil,
		map[string]any{"type": "attachment.deleted", "req_id": id, "name": name},
		audit.Event{Action: "attachment.delete", Resource: key})
}

// deleteAttachments deletes every attachment of requirement id and
// returns how many.
func (s *service) deleteAttachments(ctx context.Context, id string) (int, error) {
	bucket, err := s.cfg.Buckets.For(ctx)
	if err != nil {
		return 0, err
	}
	defer bucket.Close()
	n := 0
	it := bucket.List(&blob.ListOptions{Prefix: attachmentPrefix(id)})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := bucket.Delete(ctx, obj.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return n, err
		}
		n++
	}
}

// auditExport answers GET /t/{tenant}/audit (owners): the tenant's audit
// log as JSON Lines, verifiable offline with the tenant's audit key.
func (s *service) auditExport(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if _, err := s.cfg.Audit.Export(r.Context(), &buf); err != nil {
		s.internal(w, r, "export the audit log", err)
		return
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(buf.Bytes())
}

// auditVerify answers GET /t/{tenant}/audit/verify (owners): the chain
// of the tenant's audit log, recomputed.
func (s *service) auditVerify(w http.ResponseWriter, r *http.Request) {
	rep, err := s.cfg.Audit.Verify(r.Context())
	var ce *audit.ChainError
	switch {
	case errors.As(err, &ce):
		writeJSON(w, http.StatusOK, map[string]any{"verified": false, "seq": ce.Seq, "problem": ce.Problem, "detail": ce.Detail})
		return
	case err != nil:
		s.internal(w, r, "verify the audit log", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"verified": true, "entries": rep.Entries, "head_seq": rep.HeadSeq, "checkpoints": rep.Checkpoints})
}
