package settings

import (
	"encoding/json"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/internal/mailaddr"
)

// Section names one part of a tenant's settings. Each has a Go type
// holding its value ([RTM], [CustomFields], [Users], [Integrations],
// [Notifications], [Branding]) and a history of versions of its own.
type Section string

// The sections, as REQ-DEPLOY-004 lists what each tenant has isolated.
const (
	SectionRTM           Section = "rtm"
	SectionCustomFields  Section = "custom_fields"
	SectionUsers         Section = "users"
	SectionIntegrations  Section = "integrations"
	SectionNotifications Section = "notifications"
	SectionBranding      Section = "branding"
)

// Sections returns every section, in the order above.
func Sections() []Section {
	return []Section{SectionRTM, SectionCustomFields, SectionUsers, SectionIntegrations, SectionNotifications, SectionBranding}
}

// ParseSection returns the section named s, or an error wrapping
// ErrInvalid for a name that is none.
func ParseSection(s string) (Section, error) {
	if slices.Contains(Sections(), Section(s)) {
		return Section(s), nil
	}
	return "", &Error{Problems: []Problem{{Rule: "section " + quote(s) + " is not one of rtm, custom_fields, users, integrations, notifications, branding"}}}
}

// Value is the value of one section: RTM, CustomFields, Users,
// Integrations, Notifications or Branding (the package's types only).
type Value interface {
	// Section returns the section the value is of.
	Section() Section
	// check adds the value's problems to p.
	check(p *problems)
}

// zeroValue returns a pointer to a zero value of section s's type, or nil.
func zeroValue(s Section) any {
	switch s {
	case SectionRTM:
		return new(RTM)
	case SectionCustomFields:
		return new(CustomFields)
	case SectionUsers:
		return new(Users)
	case SectionIntegrations:
		return new(Integrations)
	case SectionNotifications:
		return new(Notifications)
	case SectionBranding:
		return new(Branding)
	}
	return nil
}

// deref turns the pointer zeroValue made into the Value it points to.
func deref(v any) Value {
	switch v := v.(type) {
	case *RTM:
		return *v
	case *CustomFields:
		return *v
	case *Users:
		return *v
	case *Integrations:
		return *v
	case *Notifications:
		return *v
	case *Branding:
		return *v
	}
	return nil
}

// ParseValue decodes data, the JSON document of a value of section s
// (as [Settings.Get]'s value marshals), and validates it. Decoding is
// strict: a document over MaxValueBytes, invalid JSON or UTF-8, nesting
// deeper than MaxDepth, a key given twice, an unknown field or a value of
// the wrong type is refused, each problem named with its field path, in
// an [*Error] (errors.Is ErrInvalid). Problems of the document (size,
// syntax, nesting, duplicate keys, types) are all reported together, and
// so are unknown fields with the rules the rest of the value breaks. In a
// secret's place, "[redacted]" keeps the stored value (see [Secret]).
func ParseValue(s Section, data []byte) (Value, error) {
	out := zeroValue(s)
	if out == nil {
		_, err := ParseSection(string(s))
		return nil, err
	}
	var p problems
	if !decodeStrict(&p, data, MaxValueBytes, out) || p.typed {
		return nil, p.err(s)
	}
	v := deref(out)
	v.check(&p)
	if err := p.err(s); err != nil {
		return nil, err
	}
	return v, nil
}

// RTM is the configuration of the tenant's RTMX requirements database:
// how requirement IDs look and which categories, statuses, priorities and
// phases a requirement may have.
type RTM struct {
	// RequirementIDPattern is the regular expression (Go's RE2 syntax,
	// which matches in linear time) every requirement ID must match,
	// anchored with ^ and $: at most 256 bytes.
	RequirementIDPattern string `json:"requirement_id_pattern"`
	// Categories, Statuses and Priorities are the names a requirement's
	// category, status and priority may take: 1 to 100 distinct names
	// each, of 1 to 64 bytes of letters, digits, '_', '-', '.' and
	// spaces, starting with a letter.
	Categories []string `json:"categories"`
	Statuses   []string `json:"statuses"`
	Priorities []string `json:"priorities"`
	// Phases are the project's phases (at most 100, distinct numbers 1 to
	// 10000); none means requirements carry no phase.
	Phases []Phase `json:"phases,omitempty"`
}

// Phase is one phase of an RTMX project.
type Phase struct {
	Number int    `json:"number"`
	Name   string `json:"name"`
}

// DefaultRTM returns RTMX's own configuration: IDs such as
// REQ-DEPLOY-004, and its statuses and priorities.
func DefaultRTM() RTM {
	return RTM{
		RequirementIDPattern: `^REQ-[A-Z][A-Z0-9]*-[0-9]{3,}$`,
		Categories:           []string{"CORE", "DATA", "API", "UI", "SEC", "DEPLOY"},
		Statuses:             []string{"MISSING", "PARTIAL", "COMPLETE"},
		Priorities:           []string{"LOW", "MEDIUM", "HIGH", "P0"},
	}
}

// Section returns SectionRTM.
func (RTM) Section() Section { return SectionRTM }

const maxPatternBytes = 256

func (r RTM) check(p *problems) {
	switch pat := r.RequirementIDPattern; {
	case pat == "" || len(pat) > maxPatternBytes:
		p.add("requirement_id_pattern", "must be 1 to "+strconv.Itoa(maxPatternBytes)+" bytes")
	case !strings.HasPrefix(pat, "^") || !strings.HasSuffix(pat, "$"):
		p.add("requirement_id_pattern", "must be anchored: start with ^ and end with $")
	default:
		if _, err := regexp.Compile(pat); err != nil {
			p.add("requirement_id_pattern", "must be a valid regular expression (RE2 syntax): "+strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
	}
	checkNames(p, "categories", r.Categories)
	checkNames(p, "statuses", r.Statuses)
	checkNames(p, "priorities", r.Priorities)
	if len(r.Phases) > 100 {
		p.add("phases", "must have at most 100 phases")
		return
	}
	seen := map[int]bool{}
	for i, ph := range r.Phases {
		path := index("phases", i)
		if ph.Number < 1 || ph.Number > 10000 {
			p.add(field(path, "number"), "must be 1 to 10000")
		} else if seen[ph.Number] {
			p.add(field(path, "number"), "must not repeat another phase's number")
		}
		seen[ph.Number] = true
		if r := checkText(ph.Name, 1, 64); r != "" {
			p.add(field(path, "name"), r)
		}
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_. -]{0,63}$`)

// checkNames checks a list of 1 to 100 distinct names.
func checkNames(p *problems, path string, names []string) {
	if len(names) == 0 || len(names) > 100 {
		p.add(path, "must have 1 to 100 names")
		return
	}
	seen := map[string]bool{}
	for i, n := range names {
		switch {
		case !nameRE.MatchString(n):
			p.add(index(path, i), "must be 1 to 64 bytes of letters, digits, '_', '-', '.' and spaces, starting with a letter")
		case seen[n]:
			p.add(index(path, i), "must not repeat another name")
		}
		seen[n] = true
	}
}

// CustomFields defines the tenant's custom fields: the JSON Schema that
// the custom-fields jsonb column of each of its requirements must match
// ([Settings.ValidateCustomFields]).
type CustomFields struct {
	// Schema is a JSON Schema, draft 2020-12 ($schema absent or
	// "https://json-schema.org/draft/2020-12/schema"), whose top level has
	// "type": "object": at most MaxSchemaBytes, nesting at most MaxDepth
	// levels. References ($ref, $dynamicRef) may point only inside the
	// schema itself (#...): nothing is loaded from a URL or a file.
	// Formats ("format": "email", "date", ...) are asserted.
	Schema json.RawMessage `json:"schema"`
}

// Section returns SectionCustomFields.
func (CustomFields) Section() Section { return SectionCustomFields }

func (c CustomFields) check(p *problems) {
	_, _ = compileSchema(p, c.Schema)
}

// Users are the tenant's users and their roles.
type Users struct {
	// Users are the users, at most 5000, each e-mail address once (not
	// told apart by case).
	Users []User `json:"users"`
	// Roles, if set, are the tenant's own role definitions (as
	// authz.NewRoles takes them); none means RTMX's: owner ⊇ editor ⊇
	// viewer (authz.DefaultRoles).
	Roles map[string]RoleDef `json:"roles,omitempty"`
}

// User is one user of the tenant.
type User struct {
	// Email is the user's address (user@example.com, no display name).
	Email string `json:"email"`
	// Name is the user's display name (at most 200 bytes, optional).
	Name string `json:"name,omitempty"`
	// Roles are the roles granted, 1 to 16, each one the tenant defines.
	Roles []string `json:"roles"`
}

// RoleDef defines one role, as authz.RoleDef does.
type RoleDef struct {
	Implies     []string `json:"implies,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
}

// Section returns SectionUsers.
func (Users) Section() Section { return SectionUsers }

// AuthzRoles returns the role definitions of u as authz takes them:
// authz.DefaultRoles() when u defines none.
func (u Users) AuthzRoles() (*authz.Roles, error) {
	if u.Roles == nil {
		return authz.DefaultRoles(), nil
	}
	defs := make(map[string]authz.RoleDef, len(u.Roles))
	for name, d := range u.Roles {
		defs[name] = authz.RoleDef{Implies: d.Implies, Permissions: d.Permissions}
	}
	return authz.NewRoles(defs)
}

const maxUsers = 5000

func (u Users) check(p *problems) {
	roles, err := u.AuthzRoles()
	if err != nil {
		p.add("roles", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "authz: "), authz.ErrInvalidConfig.Error()+": "))
		roles = nil
	}
	if u.Roles != nil && len(u.Roles) == 0 {
		p.add("roles", "must define at least one role, or be left out for the default roles")
	}
	if len(u.Users) == 0 || len(u.Users) > maxUsers {
		p.add("users", "must have 1 to "+strconv.Itoa(maxUsers)+" users")
		return
	}
	seen := map[string]bool{}
	manager := false
	for i, usr := range u.Users {
		path := index("users", i)
		if r := checkEmail(usr.Email); r != "" {
			p.add(field(path, "email"), r)
		} else if k := strings.ToLower(usr.Email); seen[k] {
			p.add(field(path, "email"), "must not repeat another user's address")
		} else {
			seen[k] = true
		}
		if usr.Name != "" {
			if r := checkText(usr.Name, 1, 200); r != "" {
				p.add(field(path, "name"), r)
			}
		}
		if len(usr.Roles) == 0 || len(usr.Roles) > 16 {
			p.add(field(path, "roles"), "must grant 1 to 16 roles")
			continue
		}
		for j, r := range usr.Roles {
			if roles == nil {
				continue
			}
			switch {
			case !slices.Contains(roles.Defined(), r):
				p.add(index(field(path, "roles"), j), "must be a role the tenant defines ("+strings.Join(roles.Defined(), ", ")+")")
			case slices.Contains(usr.Roles[:j], r):
				p.add(index(field(path, "roles"), j), "must not repeat another role of the user")
			case roles.Grants(r, authz.PermManage):
				manager = true
			}
		}
	}
	if roles != nil && !manager {
		p.add("users", "at least one user must hold a role with the "+authz.PermManage+" permission (an owner), or nobody could change the settings")
	}
}

// Integrations are the tenant's connections to other systems. Their
// secrets are sealed with the tenant's key.
type Integrations struct {
	Jira   *Jira   `json:"jira,omitempty"`
	GitHub *GitHub `json:"github,omitempty"`
}

// Jira connects a Jira project.
type Jira struct {
	// BaseURL is the site, e.g. https://acme.atlassian.net: https, a host
	// name that is not local, no user, query or fragment.
	BaseURL string `json:"base_url"`
	// Project is the project key: an upper-case letter, then 1 to 9
	// upper-case letters, digits or '_'.
	Project string `json:"project"`
	// User is the e-mail address of the account the API token belongs to.
	User string `json:"user"`
	// APIToken is the account's API token (required).
	APIToken Secret `json:"api_token"`
}

// GitHub connects a GitHub organisation (or one repository of it), as a
// GitHub App (AppID, InstallationID, PrivateKey) or with a token.
type GitHub struct {
	// BaseURL is the API of a GitHub Enterprise Server (https, as
	// Jira.BaseURL); empty means github.com.
	BaseURL string `json:"base_url,omitempty"`
	// Owner is the organisation or user: 1 to 39 letters, digits and
	// '-', not starting with '-'.
	Owner string `json:"owner"`
	// Repo is one repository of Owner (1 to 100 letters, digits, '.',
	// '-', '_'), or empty for all of them.
	Repo string `json:"repo,omitempty"`
	// AppID and InstallationID identify a GitHub App and its installation;
	// PrivateKey is the App's private key (PEM). All three, or none.
	AppID          int64  `json:"app_id,omitempty"`
	InstallationID int64  `json:"installation_id,omitempty"`
	PrivateKey     Secret `json:"private_key"`
	// Token is a personal or fine-grained access token, when no App is
	// used.
	Token Secret `json:"token"`
}

// Section returns SectionIntegrations.
func (Integrations) Section() Section { return SectionIntegrations }

var (
	jiraProjectRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{1,9}$`)
	ghOwnerRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,38}$`)
	ghRepoRE      = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

func (in Integrations) check(p *problems) {
	if j := in.Jira; j != nil {
		checkHTTPS(p, "jira.base_url", j.BaseURL, false)
		if !jiraProjectRE.MatchString(j.Project) {
			p.add("jira.project", "must be a Jira project key: an upper-case letter, then 1 to 9 upper-case letters, digits or '_'")
		}
		if r := checkEmail(j.User); r != "" {
			p.add("jira.user", r)
		}
		checkSecret(p, "jira.api_token", j.APIToken, true)
	}
	if g := in.GitHub; g != nil {
		if g.BaseURL != "" {
			checkHTTPS(p, "github.base_url", g.BaseURL, false)
		}
		if !ghOwnerRE.MatchString(g.Owner) || strings.HasSuffix(g.Owner, "-") {
			p.add("github.owner", "must be a GitHub organisation or user name: 1 to 39 letters, digits and '-', not starting or ending with '-'")
		}
		if g.Repo != "" && (!ghRepoRE.MatchString(g.Repo) || g.Repo == "." || g.Repo == "..") {
			p.add("github.repo", "must be a repository name: 1 to 100 letters, digits, '.', '-' and '_'")
		}
		app := g.AppID != 0 || g.InstallationID != 0 || g.PrivateKey.IsSet()
		switch {
		case app && g.Token.IsSet():
			p.add("github", "must use either a GitHub App (app_id, installation_id, private_key) or a token, not both")
		case app:
			if g.AppID <= 0 {
				p.add("github.app_id", "must be the App's ID, a positive integer")
			}
			if g.InstallationID <= 0 {
				p.add("github.installation_id", "must be the App installation's ID, a positive integer")
			}
			checkSecret(p, "github.private_key", g.PrivateKey, true)
			if g.PrivateKey.state == secretNew && !strings.HasPrefix(strings.TrimSpace(g.PrivateKey.value), "-----BEGIN ") {
				p.add("github.private_key", "must be a private key in PEM form (-----BEGIN ...)")
			}
		default:
			checkSecret(p, "github.token", g.Token, true)
		}
	}
}

// Notifications are the tenant's notification preferences.
type Notifications struct {
	Email    EmailNotifications `json:"email"`
	Webhooks []Webhook          `json:"webhooks,omitempty"`
}

// EmailNotifications say which events are sent by e-mail, to whom and
// how often.
type EmailNotifications struct {
	Enabled bool `json:"enabled"`
	// Recipients are at most 100 addresses; none means the tenant's
	// owners.
	Recipients []string `json:"recipients,omitempty"`
	// Events are the events notified (none: every event).
	Events []Event `json:"events,omitempty"`
	// Digest is DigestImmediate, DigestDaily or DigestWeekly ("" is
	// immediate).
	Digest Digest `json:"digest,omitempty"`
}

// Digest is how often e-mail notifications are sent.
type Digest string

// The digests.
const (
	DigestImmediate Digest = "immediate"
	DigestDaily     Digest = "daily"
	DigestWeekly    Digest = "weekly"
)

// Webhook posts events to a URL.
type Webhook struct {
	// Name identifies the webhook among the tenant's: 1 to 63 bytes of
	// a-z, 0-9, '_' and '-', starting with a letter.
	Name string `json:"name"`
	// URL is where events are posted: https, a host name that is not
	// local, no user or fragment, at most 2048 bytes. It is not secret
	// (it is stored and shown in the clear): put credentials in
	// SigningSecret, not in the URL.
	URL string `json:"url"`
	// Events are the events posted (none: every event).
	Events []Event `json:"events,omitempty"`
	// SigningSecret, if set, signs each delivery (HMAC): 16 bytes or more.
	SigningSecret Secret `json:"signing_secret"`
}

// Event is a kind of event a notification can be about.
type Event string

// The events.
const (
	EventRequirementCreated Event = "requirement.created"
	EventRequirementUpdated Event = "requirement.updated"
	EventRequirementDeleted Event = "requirement.deleted"
	EventStatusChanged      Event = "requirement.status_changed"
	EventVerificationFailed Event = "verification.failed"
)

var events = []Event{EventRequirementCreated, EventRequirementUpdated, EventRequirementDeleted, EventStatusChanged, EventVerificationFailed}

// Section returns SectionNotifications.
func (Notifications) Section() Section { return SectionNotifications }

var webhookNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

func (n Notifications) check(p *problems) {
	e := n.Email
	if len(e.Recipients) > 100 {
		p.add("email.recipients", "must have at most 100 addresses")
	} else {
		for i, r := range e.Recipients {
			if rule := checkEmail(r); rule != "" {
				p.add(index("email.recipients", i), rule)
			}
		}
	}
	checkEvents(p, "email.events", e.Events)
	switch e.Digest {
	case "", DigestImmediate, DigestDaily, DigestWeekly:
	default:
		p.add("email.digest", "must be immediate, daily or weekly")
	}
	if len(n.Webhooks) > 20 {
		p.add("webhooks", "must have at most 20 webhooks")
		return
	}
	names := map[string]bool{}
	for i, w := range n.Webhooks {
		path := index("webhooks", i)
		switch {
		case !webhookNameRE.MatchString(w.Name):
			p.add(field(path, "name"), "must be 1 to 63 bytes of a-z, 0-9, '_' and '-', starting with a letter")
		case names[w.Name]:
			p.add(field(path, "name"), "must not repeat another webhook's name")
		}
		names[w.Name] = true
		checkHTTPS(p, field(path, "url"), w.URL, true)
		checkEvents(p, field(path, "events"), w.Events)
		checkSecret(p, field(path, "signing_secret"), w.SigningSecret, false)
		if w.SigningSecret.state == secretNew && len(w.SigningSecret.value) < 16 {
			p.add(field(path, "signing_secret"), "must be at least 16 bytes")
		}
	}
}

func checkEvents(p *problems, path string, evs []Event) {
	for i, ev := range evs {
		switch {
		case !slices.Contains(events, ev):
			p.add(index(path, i), "must be one of "+joinEvents())
		case slices.Contains(evs[:i], ev):
			p.add(index(path, i), "must not repeat another event")
		}
	}
}

func joinEvents() string {
	s := make([]string, len(events))
	for i, e := range events {
		s[i] = string(e)
	}
	return strings.Join(s, ", ")
}

// Branding is the tenant's own look, on the enterprise and government
// tiers only.
type Branding struct {
	// ProductName replaces "RTMX" in the user interface (at most 64
	// bytes).
	ProductName string `json:"product_name,omitempty"`
	// LogoURL is an https URL of the logo (as Webhook.URL).
	LogoURL string `json:"logo_url,omitempty"`
	// PrimaryColor and AccentColor are colours as #rrggbb.
	PrimaryColor string `json:"primary_color,omitempty"`
	AccentColor  string `json:"accent_color,omitempty"`
}

// Section returns SectionBranding.
func (Branding) Section() Section { return SectionBranding }

var colorRE = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

func (b Branding) check(p *problems) {
	if b.ProductName != "" {
		if r := checkText(b.ProductName, 1, 64); r != "" {
			p.add("product_name", r)
		}
	}
	if b.LogoURL != "" {
		checkHTTPS(p, "logo_url", b.LogoURL, true)
	}
	for _, c := range []struct{ path, v string }{{"primary_color", b.PrimaryColor}, {"accent_color", b.AccentColor}} {
		if c.v != "" && !colorRE.MatchString(c.v) {
			p.add(c.path, "must be a colour as #rrggbb (six hexadecimal digits)")
		}
	}
}

// checkText returns the rule s breaks as a display text of min to max
// bytes, or "".
func checkText(s string, min, max int) string {
	if len(s) < min || len(s) > max {
		return "must be " + strconv.Itoa(min) + " to " + strconv.Itoa(max) + " bytes"
	}
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r) {
			return "must not hold control characters"
		}
	}
	if strings.TrimSpace(s) != s {
		return "must not start or end with white space"
	}
	return ""
}

// checkEmail returns the rule s breaks as an e-mail address, or "": the
// rules of internal/mailaddr, which the provisioning request and the
// invitation apply too.
func checkEmail(s string) string { return mailaddr.Check(s) }

// checkHTTPS checks an https URL that the platform will call (or show):
// no user, fragment or, unless query, query; a host name that is not
// local, or a public IP address.
func checkHTTPS(p *problems, path, s string, query bool) {
	if s == "" {
		p.add(path, "is required: an https URL")
		return
	}
	if len(s) > 2048 {
		p.add(path, "must be at most 2048 bytes")
		return
	}
	u, err := url.Parse(s)
	if err != nil || !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		p.add(path, "must be a valid URL")
		return
	}
	switch {
	case u.Scheme != "https":
		p.add(path, "must be an https URL (https://...)")
	case u.Opaque != "" || u.Host == "":
		p.add(path, "must be an https URL with a host (https://host/...)")
	case u.User != nil:
		p.add(path, "must not carry a user or password (put credentials in the secret fields)")
	case u.Fragment != "" || strings.Contains(s, "#"):
		p.add(path, "must not have a fragment (#...)")
	case !query && (u.RawQuery != "" || u.ForceQuery):
		p.add(path, "must not have a query (?...)")
	default:
		if port := u.Port(); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				p.add(path, "must have a port from 1 to 65535")
				return
			}
		}
		host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
		if ip, err := netip.ParseAddr(host); err == nil {
			if !publicIP(ip) {
				p.add(path, "must not name a loopback, private, link-local or otherwise non-public address")
			}
			return
		}
		// A name whose last label is all digits is no DNS name (no TLD is
		// numeric) but may be an address to a resolver: inet_aton reads
		// 127.1 and 0x7f.0.0.1 as 127.0.0.1.
		last := host[strings.LastIndexByte(host, '.')+1:]
		if net.ParseIP(host) != nil || mailaddr.CheckDomain(host) != "" || strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
			p.add(path, "must name a host by a DNS name of two labels or more, or a public IP address")
			return
		}
		if host == "localhost" || strings.HasSuffix(host, ".localhost") || strings.HasSuffix(host, ".local") || strings.HasSuffix(host, ".internal") {
			p.add(path, "must not name a local host")
		}
	}
}

// publicIP reports whether ip is a global unicast address outside the
// private, shared and documentation ranges.
func publicIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
		return false
	}
	for _, pfx := range nonPublic {
		if pfx.Contains(ip) {
			return false
		}
	}
	return true
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// checkSecret checks a secret field: set if required, and a new value of
// 1 to maxSecretBytes bytes of valid UTF-8 without NUL.
func checkSecret(p *problems, path string, s Secret, required bool) {
	switch s.state {
	case secretNone:
		if required {
			p.add(path, "is required (a new value with NewSecret, or \""+redacted+"\" to keep the stored one)")
		}
	case secretNew:
		if s.value == "" || len(s.value) > maxSecretBytes || !utf8.ValidString(s.value) || strings.ContainsRune(s.value, 0) {
			p.add(path, "must be 1 to "+strconv.Itoa(maxSecretBytes)+" bytes of UTF-8 text without NUL")
		}
		if s.value == redacted {
			p.add(path, "must not be the text \""+redacted+"\", which stands for the stored value")
		}
	}
}
